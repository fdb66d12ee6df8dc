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
import tempfile
from pathlib import Path

import epoch_timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    epoch_timing.add_arguments(parser, steps=50)
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 10, 50],
                        help="--scan-steps values (0: one step per call)")
    args = parser.parse_args()
    epoch_timing.check_arguments(parser, args)
    if any(c < 0 or (c > 1 and args.steps % c) for c in args.chunks):
        parser.error("every --chunks value must be 0, 1 or a divisor of --steps")

    from ppl_dgm.threads import apply_threads

    apply_threads(args.threads)
    from ppl_dgm import registry
    from ppl_dgm.config import resolve
    from ppl_dgm.training.numpyro_loop import NumPyroTrainer

    load = epoch_timing.uptime()
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for chunk in args.chunks:
            config = resolve(registry.get(args.model, "numpyro"),
                             {"dataset": args.dataset, "data_dir": args.data_dir,
                              "steps_per_epoch": args.steps, "scan_steps": chunk,
                              "device": "cpu", "seed": 0, "threads": args.threads}, {})
            trainer = NumPyroTrainer(config, Path(tmp) / f"scan{chunk}", progress=False)
            trainer.compile()
            name = f"scan_steps={chunk}"
            epoch_timing.first_epoch(name, trainer)  # compiles the scanned program too
            trainers[name] = trainer
        rows = epoch_timing.time_epochs(trainers, args.rounds, args.steps)
    epoch_timing.report(f"{args.model} on {args.dataset} (NumPyro), {args.steps} steps per epoch, "
                        f"{args.rounds} rounds, {args.threads} thread(s)", rows, load, args)


if __name__ == "__main__":
    main()
