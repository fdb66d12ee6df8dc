"""Data-parallel training of the Pyro backend with PyTorch's ``DistributedDataParallel`` (DDP).

Launch one process per GPU (or per CPU worker) the standard way::

    torchrun --nproc_per_node 2 -m ppl_dgm.cli train m2 --dataset mnist --labels 100 --out runs/m2
    torchrun --nnodes 2 --node_rank R --master_addr HOST --nproc_per_node 4 -m ppl_dgm.cli train ...

``ppl-dgm train`` sees torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and trains
with :class:`DistributedTrainer`; ``--distributed`` asks for it explicitly (without a launcher it is a
world of one process). The process group uses NCCL on GPUs (rank ``LOCAL_RANK`` of the node takes
``cuda:LOCAL_RANK``) and gloo on CPUs.

What each process does:

* Every rank draws the same global batches (the numpy generator seeded by ``--seed``) and takes its
  contiguous slice of each: ``batch_size`` and the labelled batch are split into equal shards, so
  they must be divisible by the number of processes. The global batch, and with it the run's
  hyperparameters, are those of a one-process run.
* The loss of a shard is the objective's mean over the shard (``ppl_dgm.infer.objectives``); DDP
  averages the gradients over the ranks, which for equal shards is the gradient of the mean over the
  global batch: the update equals the one-process update up to floating-point rounding (tested). The
  objective runs inside DDP's ``forward`` (:class:`Objective` wraps the pair and
  ``Trainer.compute_loss``), as Lightning runs ``training_step`` (Pyro's ``examples/svi_lightning.py``).
* Monte Carlo noise (the latent samples, dynamic binarisation) comes from each rank's torch
  generator: rank 0 keeps the one-process stream, rank r > 0 is seeded from (seed, r, step). A
  stochastic objective therefore draws different noise than a one-process run (same distribution).
* Batch normalisation: on GPUs the pair's batch-norm layers become ``SyncBatchNorm`` (statistics over
  the global batch, as in one process). ``SyncBatchNorm`` needs a GPU: on CPUs (gloo) each rank
  normalises with its shard's statistics, and the running statistics are rank 0's (DDP broadcasts
  buffers from rank 0 at each step).
* Rank 0 alone evaluates, writes the run directory (``config.json``, ``checkpoint.pt``,
  ``history.nc``, ``summary.json``) and shows progress; the recorded step statistics are averaged
  over the ranks. The checkpoint holds the unwrapped pair's ``state_dict``, the optimiser, the
  schedule, the numpy generator and rank 0's torch generator, so ``--resume`` continues with any
  number of processes (one included): the batch sequence and parameters continue exactly; ranks > 0
  re-seed their noise from (seed, rank, step).
* ``--max-minutes`` is decided on rank 0's clock (broadcast each epoch), and a SIGINT/SIGTERM that
  reaches any rank stops all of them after the same step, so that the ranks always agree on where
  the run ends; rank 0 then writes the checkpoint of the steps done (the epoch's running statistics
  averaged over the ranks), from which ``--resume`` finishes the epoch. A rank that fails (e.g. a
  non-finite loss) ends the run: torchrun stops the others.

Importing this module imports torch, never JAX.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ppl_dgm.config import TrainConfig
from ppl_dgm.nn.torch_blocks import BatchNorm
from ppl_dgm.spec import ModelSpec
from ppl_dgm.training.loop import Trainer, resolve_device

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets its variables)."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_process_group(device: torch.device) -> tuple[int, int, int]:
    """Join (or create) the default process group: NCCL for CUDA, gloo for CPU.

    Returns ``(rank, world_size, local_rank)``. With a launcher's environment the group is read from
    it (``env://``); without one it is a group of one process.
    """
    backend = "nccl" if device.type == "cuda" else "gloo"
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    if launched_by_torchrun():
        local_rank = int(os.environ["LOCAL_RANK"])
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, init_method="env://")
        return dist.get_rank(), dist.get_world_size(), local_rank
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                            world_size=1)
    return 0, 1, 0


class _SyncBatchNorm(nn.SyncBatchNorm):
    """``SyncBatchNorm`` over all leading dimensions, features last (as ``torch_blocks.BatchNorm``)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        shape = h.shape
        return super().forward(h.reshape(-1, shape[-1])).reshape(shape)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace the batch-norm layers of ``module`` in place by synchronised ones that share their
    parameters and running statistics (the optimiser keeps working on the same tensors)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            kind = _SyncBatchNorm if isinstance(child, BatchNorm) else nn.SyncBatchNorm
            sync = kind(child.num_features, child.eps, child.momentum, child.affine,
                        child.track_running_stats)
            if child.affine:
                sync.weight, sync.bias = child.weight, child.bias
            sync.running_mean, sync.running_var = child.running_mean, child.running_var
            sync.num_batches_tracked = child.num_batches_tracked
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module


class Objective(nn.Module):
    """The pair with the trainer's objective as ``forward(idx, idx_l, beta) -> (loss, stats)``:
    what DDP wraps, so that its gradient hooks average the pair's gradients over the ranks."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.pair = trainer.pair
        self._trainer = (trainer,)  # not a submodule

    def forward(self, idx: torch.Tensor, idx_l: torch.Tensor | None,
                beta: float) -> tuple[torch.Tensor, dict[str, float]]:
        return Trainer.compute_loss(self._trainer[0], idx, idx_l, beta)


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of rank ``rank`` > 0 from step ``step`` on."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class DistributedTrainer(Trainer):
    """:class:`~ppl_dgm.training.loop.Trainer` in one process of a data-parallel group; see the module
    docstring. Joins the default process group if it is not yet initialised."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, progress: bool = True,
                 spec: ModelSpec | None = None) -> None:
        device = resolve_device(config.device)
        self.rank, self.world_size, self.local_rank = init_process_group(device)
        super().__init__(config, run_dir, progress=progress and self.rank == 0, spec=spec)
        self.writes_records = self.rank == 0
        n_l = min(config.labelled_batch_size, len(self.labelled))
        sizes = {"--batch-size": config.batch_size}
        if self.task == "semi-supervised":
            sizes["the labelled batch (--labelled-batch-size, at most --labels)"] = n_l
        for what, size in sizes.items():
            if size % self.world_size:
                raise ValueError(f"{what} = {size} does not split into {self.world_size} equal shards: "
                                 f"make it a multiple of the number of processes")
        if self.world_size > 1 and self.device.type == "cuda":
            convert_sync_batchnorm(self.pair)
        if self.rank > 0:
            torch.manual_seed(rank_seed(config.seed, self.rank, 0))
        self.objective = Objective(self)
        self.ddp = DistributedDataParallel(
            self.objective,
            device_ids=[torch.cuda.current_device()] if self.device.type == "cuda" else None,
            find_unused_parameters=True)

    # ----------------------------------------------------------------------------- data and steps
    def _shard(self, idx: torch.Tensor) -> torch.Tensor:
        size = len(idx) // self.world_size
        return idx[self.rank * size:(self.rank + 1) * size]

    def _batches(self):
        """This rank's slices of the global batches."""
        for idx, idx_l in super()._batches():
            yield self._shard(idx), None if idx_l is None else self._shard(idx_l)

    def compute_loss(self, idx: torch.Tensor, idx_l: torch.Tensor | None,
                     beta: float) -> tuple[torch.Tensor, dict[str, float]]:
        return self.ddp(idx, idx_l, beta)

    def _mean_over_ranks(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return (t / self.world_size).tolist()

    def train_epoch(self, bar: Any) -> dict[str, float]:
        """One epoch of data-parallel steps; the statistics averaged over the ranks."""
        stats = super().train_epoch(bar)
        keys = sorted(stats)
        return dict(zip(keys, self._mean_over_ranks([stats[k] for k in keys]), strict=True))

    def checkpoint_interrupted(self) -> bool:
        """Every rank passes here at the same step: the epoch's running sums of the step statistics
        are averaged over the ranks (as the epoch's record would be), then rank 0 writes the
        checkpoint. A resumed run continues from these sums on every rank."""
        progress = self.in_epoch
        if progress is not None and progress["steps_done"]:
            self.check_partial_epoch()  # the device sums read into the record
            sums = progress["stats"]
            keys = sorted(sums)
            sums.update(zip(keys, self._mean_over_ranks([sums[k] for k in keys]), strict=True))
        return super().checkpoint_interrupted()

    def check_stop(self) -> None:
        """A SIGINT/SIGTERM seen by any rank stops every rank at the same step (one all-reduce of a
        flag; every rank calls this at the same points of the loop)."""
        signum = getattr(self, "_stop_signal", None) or 0
        t = torch.tensor([signum], dtype=torch.int64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if t.item() and not signum:
            self._stop_signal = int(t.item())
        super().check_stop()

    # ----------------------------------------------------------------------------- records
    def evaluate_epoch(self) -> dict[str, Any]:
        return super().evaluate_epoch() if self.rank == 0 else {}

    def save_checkpoint(self) -> None:
        # every rank passes here once per epoch, just before fit() compares the training time with
        # --max-minutes: rank 0's clock decides for all
        t = torch.tensor([self.train_seconds], dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(t, 0)
        self.train_seconds = t.item()
        if self.rank == 0:
            super().save_checkpoint()

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        super().load_checkpoint(path)
        if self.rank > 0:
            torch.manual_seed(rank_seed(self.config.seed, self.rank, self.step))

    def write_records(self) -> None:
        if self.rank == 0:
            super().write_records()

    def summary_extras(self) -> dict[str, Any]:
        return {**super().summary_extras(), "world_size": self.world_size,
                "distributed_backend": dist.get_backend()}

    def finish(self) -> dict[str, Any]:
        """Rank 0 evaluates and writes the summary; the other ranks return ``{}``."""
        return super().finish() if self.rank == 0 else {}

    def fit(self, resume: bool = False) -> dict[str, Any]:
        summary = super().fit(resume=resume)
        dist.barrier()
        return summary
