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
import tempfile
from pathlib import Path

import epoch_timing

SETTINGS = ("step", "epoch", "compiled")


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
    epoch_timing.add_arguments(parser, steps=20)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS,
                        help="what to time (the first is the reference of the ratios)")
    args = parser.parse_args()
    epoch_timing.check_arguments(parser, args)

    from ppl_dgm.threads import apply_threads

    apply_threads(args.threads)
    from ppl_dgm import registry
    from ppl_dgm.config import resolve
    from ppl_dgm.training.loop import Trainer

    load = epoch_timing.uptime()
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
            first[setting] = epoch_timing.first_epoch(setting, trainer)
            trainers[setting] = trainer
        rows = epoch_timing.time_epochs(trainers, args.rounds, args.steps)
    for setting, row in rows.items():
        row["first_epoch_seconds"] = first[setting]
    epoch_timing.report(f"{args.model} on {args.dataset} (Pyro), {args.steps} steps per epoch, "
                        f"{args.rounds} rounds, {args.threads} thread(s)", rows, load, args)


if __name__ == "__main__":
    main()
