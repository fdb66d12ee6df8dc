"""The trainer of each backend, imported only when asked for: the Pyro side never imports JAX, nor
the NumPyro side torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def trainer_class(backend: str, distributed: bool = False) -> Any:
    """The trainer of ``backend`` (``pyro`` or ``numpyro``); ``distributed``: its data-parallel
    form (DDP for Pyro, the batch sharded over JAX's devices for NumPyro)."""
    if backend == "numpyro":
        if distributed:
            from ppl_dgm.training.numpyro_sharded import ShardedNumPyroTrainer

            return ShardedNumPyroTrainer
        from ppl_dgm.training.numpyro_loop import NumPyroTrainer

        return NumPyroTrainer
    if distributed:
        from ppl_dgm.training.distributed import DistributedTrainer

        return DistributedTrainer
    from ppl_dgm.training.loop import Trainer

    return Trainer


def load_trainer(run_dir: str | Path, backend: str, device: str = "auto") -> Any:
    """The trainer of ``backend`` restored from ``run_dir``'s configuration and last checkpoint."""
    if backend == "numpyro":
        from ppl_dgm.training.numpyro_loop import load_run
    else:
        from ppl_dgm.training.loop import load_run
    return load_run(run_dir, device)
