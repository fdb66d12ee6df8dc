"""NumPyro: one compiled step per call against steps compiled together (``--scan-steps``).

    python benchmarks/numpyro_scan.py                       # M2, MNIST with 100 labels, 1 thread
    python benchmarks/numpyro_scan.py --model adgm --chunks 0 10 50 --steps 100 --rounds 3

For every ``--chunks`` value one NumPyro trainer of the registered recipe is built (the same seed),
its programs compiled by a first epoch of ``--steps`` steps (not timed), then ``--rounds`` epochs
of each trainer are timed in turn (interleaved, so a change of load affects every setting alike);
the median seconds per step are printed with their ratio to ``--chunks``' first value. The loop
reads the losses once per epoch in every setting. MNIST is read from ``--data-dir`` (default
``$PPL_DGM_DATA``, else ``../shared/data``); ``--dataset digits`` needs no files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path


class _Bar:
    """What ``train_epoch`` needs of a progress bar."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="m2", help="a registered semi-supervised or "
                                                      "unsupervised model")
    parser.add_argument("--dataset", default="mnist", help="mnist or digits")
    parser.add_argument("--data-dir", default=os.environ.get("PPL_DGM_DATA", "../shared/data"))
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 10, 50],
                        help="--scan-steps values (0: one step per call)")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per setting")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: every core)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    for value, name in ((args.steps, "--steps"), (args.rounds, "--rounds")):
        if value < 1:
            parser.error(f"{name} must be at least 1")
    if any(c < 0 or (c > 1 and args.steps % c) for c in args.chunks):
        parser.error("every --chunks value must be 0, 1 or a divisor of --steps")

    from ppl_dgm.threads import apply_threads

    apply_threads(args.threads)
    import tempfile

    from ppl_dgm import registry
    from ppl_dgm.config import resolve
    from ppl_dgm.train.numpyro_loop import NumPyroTrainer

    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for chunk in args.chunks:
            config = resolve(registry.get(args.model, "numpyro"),
                             {"dataset": args.dataset, "data_dir": args.data_dir,
                              "steps_per_epoch": args.steps, "scan_steps": chunk,
                              "device": "cpu", "seed": 0, "threads": args.threads}, {})
            trainer = NumPyroTrainer(config, Path(tmp) / f"scan{chunk}", progress=False)
            trainer.compile()
            started = time.perf_counter()
            trainer.train_epoch(_Bar())  # compiles the scanned program too
            print(f"scan_steps={chunk}: first epoch (with compilation) "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
            trainers[chunk] = trainer
        seconds: dict[int, list[float]] = {c: [] for c in args.chunks}
        for _ in range(args.rounds):
            for chunk, trainer in trainers.items():
                started = time.perf_counter()
                trainer.train_epoch(_Bar())  # ends with one read of the losses
                seconds[chunk].append((time.perf_counter() - started) / args.steps)
    base = statistics.median(seconds[args.chunks[0]])
    rows = {c: {"ms_per_step": 1000 * statistics.median(s), "ratio": statistics.median(s) / base}
            for c, s in seconds.items()}
    print(f"{args.model} on {args.dataset}, {args.steps} steps per epoch, {args.rounds} rounds, "
          f"{args.threads} thread(s); load before: {load}")
    for chunk, row in rows.items():
        print(f"  scan_steps={chunk:>4}: {row['ms_per_step']:8.1f} ms/step  "
              f"({row['ratio']:.3f}x of scan_steps={args.chunks[0]})")
    print("load after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "load_before": load, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
