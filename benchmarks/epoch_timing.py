"""What the epoch-timing benchmarks share (``numpyro_scan.py``, ``pyro_step_options.py``): their
common options, a stand-in progress bar, and the interleaved timing of trainers' epochs.

Each benchmark builds one trainer per setting, runs one untimed epoch of each (compilation), then
times ``--rounds`` epochs of every trainer in turn, so that a change of load affects every setting
alike, and prints the median seconds per step with the ratio to the first setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any


class NullBar:
    """What a trainer's ``train_epoch`` needs of a progress bar."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: object) -> None:
        pass


def add_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    """The options every epoch-timing benchmark takes."""
    parser.add_argument("--model", default="m2", help="a registered semi-supervised or "
                                                      "unsupervised model")
    parser.add_argument("--dataset", default="mnist", help="mnist or digits")
    parser.add_argument("--data-dir", default=os.environ.get("PPL_DGM_DATA", "../shared/data"))
    parser.add_argument("--steps", type=int, default=steps, help="steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per setting")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: every core)")
    parser.add_argument("--json", type=Path, help="also write the figures here")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for value, name in ((args.steps, "--steps"), (args.rounds, "--rounds")):
        if value < 1:
            parser.error(f"{name} must be at least 1")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def first_epoch(name: str, trainer: Any) -> float:
    """The untimed first epoch of a trainer (with any compilation); prints and returns its seconds."""
    started = time.perf_counter()
    trainer.train_epoch(NullBar())
    seconds = time.perf_counter() - started
    print(f"{name}: first epoch (with any compilation) {seconds:.1f} s", flush=True)
    return seconds


def time_epochs(trainers: dict[str, Any], rounds: int, steps: int) -> dict[str, dict[str, float]]:
    """``rounds`` epochs of every trainer in turn; per setting the median milliseconds per step and
    its ratio to the first setting's."""
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            started = time.perf_counter()
            trainer.train_epoch(NullBar())  # ends with one read of the epoch's statistics
            seconds[name].append((time.perf_counter() - started) / steps)
    base = statistics.median(next(iter(seconds.values())))
    return {name: {"ms_per_step": 1000 * statistics.median(s), "ratio": statistics.median(s) / base}
            for name, s in seconds.items()}


def report(title: str, rows: dict[str, dict[str, float]], load: str,
           args: argparse.Namespace) -> None:
    """Print the rows (and write ``--json``), with the load before and after."""
    print(f"{title}; load before: {load}")
    first = next(iter(rows))
    for name, row in rows.items():
        extra = (f"; first epoch {row['first_epoch_seconds']:.1f} s"
                 if "first_epoch_seconds" in row else "")
        print(f"  {name:>14}: {row['ms_per_step']:8.1f} ms/step  ({row['ratio']:.3f}x of {first}"
              f"{extra})")
    after = uptime()
    print("load after:", after)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "load_before": load, "load_after": after, "rows": rows},
                                        indent=1))
