"""Seconds per CaGeM training step, Pyro against NumPyro, on MNIST (registered defaults).

    python benchmarks/cagem_step_time.py --backend pyro --labels 100 --steps 40
    python benchmarks/cagem_step_time.py --backend numpyro --labels 100 --steps 40

Run each backend in its own process with one thread (``OMP_NUM_THREADS=1``, ``XLA_FLAGS=
"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"``). The first ``--warmup``
steps (and NumPyro's compilation) are not timed; the NumPyro timing waits for the last step's
result. Prints one JSON line: backend, labels, steps, seconds per step, load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from ppl_dgm import registry
from ppl_dgm.config import resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["pyro", "numpyro"], default="pyro")
    parser.add_argument("--labels", type=int, default=100, help="0: unsupervised (default 100)")
    parser.add_argument("--dataset", default="mnist", help="default mnist")
    parser.add_argument("--data-dir", default=None, help="default $PPL_DGM_DATA")
    parser.add_argument("--steps", type=int, default=40, help="timed steps (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    hparams = {"n_clusters": 10} if args.labels == 0 else {}
    config = resolve(registry.get("cagem", args.backend),
                     {"dataset": args.dataset, "data_dir": args.data_dir, "labels": args.labels,
                      "device": "cpu", "seed": args.seed, "epochs": 1,
                      "steps_per_epoch": args.steps + args.warmup}, hparams)
    if args.backend == "pyro":
        from ppl_dgm.training.loop import Trainer

        trainer = Trainer(config, "/nonexistent-run-dir", progress=False)
        batches = list(trainer._batches())
        for idx, idx_l in batches[:args.warmup]:
            trainer.train_step(idx, idx_l)
        started = time.perf_counter()
        for idx, idx_l in batches[args.warmup:]:
            trainer.train_step(idx, idx_l)
        seconds = time.perf_counter() - started
    else:
        from ppl_dgm.training.numpyro_loop import NumPyroTrainer

        trainer = NumPyroTrainer(config, "/nonexistent-run-dir", progress=False)
        trainer.compile()
        batches = list(trainer._batches())
        for idx_l, idx in batches[:args.warmup]:
            loss, _ = trainer.train_step(idx_l, idx)
        loss.block_until_ready()
        started = time.perf_counter()
        for idx_l, idx in batches[args.warmup:]:
            loss, _ = trainer.train_step(idx_l, idx)
        loss.block_until_ready()
        seconds = time.perf_counter() - started
    print(json.dumps({"backend": args.backend, "labels": args.labels, "steps": args.steps,
                      "seconds_per_step": seconds / args.steps,
                      "loadavg": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
