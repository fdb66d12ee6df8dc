"""Pyro: the step time of the registered recipe with and without ``torch.compile`` of its networks,
and with the finiteness check read every step or once per epoch (``--finite-check``).

    python benchmarks/pyro_step_options.py                  # M2, MNIST with 100 labels, 1 thread
    python benchmarks/pyro_step_options.py --model adgm --steps 30 --rounds 3 --threads 2

Settings (one Pyro trainer each, the same seed): ``step`` (the default on a CPU: the loss and
gradient norm read before every update), ``epoch`` (read once per epoch) and ``compiled`` (every
network of the pair, the children of ``pair.p`` and ``pair.q``, wrapped in ``torch.compile``;
reads per step). Each trainer first runs one untimed epoch of ``--steps`` steps (for ``compiled``
the compilation, reported), then ``--rounds`` epochs of each are timed in turn (interleaved, so a
change of load affects every setting alike); the median seconds per step are printed with their
ratio to ``step``. MNIST is read from ``--data-dir`` (default ``$PPL_DGM_DATA``, else
``../shared/data``); ``--dataset digits`` needs no files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

SETTINGS = ("step", "epoch", "compiled")


class _Bar:
    """What ``train_epoch`` needs of a progress bar."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: object) -> None:
        pass


def compile_networks(pair) -> int:
    """Wrap every child module of ``pair.p`` and ``pair.q`` that holds parameters in
    ``torch.compile``; returns how many."""
    import torch

    count = 0
    for part in (pair.p, pair.q):
        for name, child in list(part.named_children()):
            if any(True for _ in child.parameters()):
                setattr(part, name, torch.compile(child, dynamic=False))
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="m2", help="a registered semi-supervised or "
                                                      "unsupervised model")
    parser.add_argument("--dataset", default="mnist", help="mnist or digits")
    parser.add_argument("--data-dir", default=os.environ.get("PPL_DGM_DATA", "../shared/data"))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS,
                        help="what to time (the first is the reference of the ratios)")
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per setting")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: every core)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    for value, name in ((args.steps, "--steps"), (args.rounds, "--rounds")):
        if value < 1:
            parser.error(f"{name} must be at least 1")

    from ppl_dgm.threads import apply_threads

    apply_threads(args.threads)
    import tempfile

    from ppl_dgm import registry
    from ppl_dgm.config import resolve
    from ppl_dgm.train.loop import Trainer

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    trainers, first = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings:
            config = resolve(registry.get(args.model),
                             {"dataset": args.dataset, "data_dir": args.data_dir,
                              "steps_per_epoch": args.steps, "device": "cpu", "seed": 0,
                              "threads": args.threads,
                              "finite_check": "epoch" if setting == "epoch" else "step"}, {})
            trainer = Trainer(config, Path(tmp) / setting, progress=False)
            if setting == "compiled":
                print(f"compiled {compile_networks(trainer.pair)} networks", flush=True)
            started = time.perf_counter()
            trainer.train_epoch(_Bar())
            first[setting] = time.perf_counter() - started
            print(f"{setting}: first epoch (with any compilation) {first[setting]:.1f} s", flush=True)
            trainers[setting] = trainer
        seconds: dict[str, list[float]] = {s: [] for s in args.settings}
        for _ in range(args.rounds):
            for setting, trainer in trainers.items():
                started = time.perf_counter()
                trainer.train_epoch(_Bar())
                seconds[setting].append((time.perf_counter() - started) / args.steps)
    base = statistics.median(seconds[args.settings[0]])
    rows = {s: {"ms_per_step": 1000 * statistics.median(v), "ratio": statistics.median(v) / base,
                "first_epoch_seconds": first[s]} for s, v in seconds.items()}
    print(f"{args.model} on {args.dataset} (Pyro), {args.steps} steps per epoch, {args.rounds} "
          f"rounds, {args.threads} thread(s); load before: {load}")
    for setting, row in rows.items():
        print(f"  {setting:>8}: {row['ms_per_step']:8.1f} ms/step  "
              f"({row['ratio']:.3f}x of {args.settings[0]}; first epoch "
              f"{row['first_epoch_seconds']:.1f} s)")
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "load_before": load, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
