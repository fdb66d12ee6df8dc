"""Data-parallel training of the NumPyro backend: the batch sharded over JAX's devices.

``ppl-dgm train MODEL --backend numpyro --distributed`` trains with :class:`ShardedNumPyroTrainer`:
a one-dimensional ``jax.sharding.Mesh`` over every device of the run's platform (``--device``: all
GPUs, or all CPU devices, e.g. ``XLA_FLAGS=--xla_force_host_platform_device_count=2``), the SVI state
(parameters, optimiser and batch-norm state) and the data arrays replicated on it
(``NamedSharding(mesh, P())``), each step's index batches split along the mesh
(``NamedSharding(mesh, P("batch"))``, ``jax.device_put``). The training step is the one of
:class:`~ppl_dgm.training.numpyro_loop.NumPyroTrainer`, compiled for these shardings: XLA partitions the
gathering, the binarisation and the SVI update over the devices and sums the gradients across them,
and the updated state comes back replicated. The result is the one-device step's up to
floating-point rounding (tested with two forced host devices): JAX's random numbers do not depend on
the sharding, so even the Monte Carlo noise is the same. Batch normalisation sees the whole batch,
as on one device. ``batch_size`` and the labelled batch must be multiples of the number of devices.

Checkpoints hold the state fetched to the host, so ``--resume`` works with any number of devices.
Importing this module never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ppl_dgm.config import TrainConfig
from ppl_dgm.errors import UserError
from ppl_dgm.spec import ModelSpec
from ppl_dgm.training.numpyro_loop import NumPyroTrainer, resolve_device

# positions of the index batches in NumPyroTrainer._step_args(...) per task
_INDEX_ARGS = {"semi-supervised": (2, 3), "unsupervised": (1,), "supervised": (2,)}


def batch_mesh(platform: str) -> Mesh:
    """A one-dimensional mesh (axis ``batch``) over every device of ``platform``."""
    return Mesh(np.asarray(jax.devices(platform)), ("batch",))


class ShardedNumPyroTrainer(NumPyroTrainer):
    """:class:`~ppl_dgm.training.numpyro_loop.NumPyroTrainer` with the batch sharded over the devices of
    the run's platform; see the module docstring."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, progress: bool = True,
                 initialise: bool = True, spec: ModelSpec | None = None) -> None:
        if config.scan_steps > 1:
            raise UserError("--scan-steps is not available with the batch sharded over devices",
                            "omit --scan-steps (or set it to 0)")
        self.mesh = batch_mesh(resolve_device(config.device).platform)
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("batch"))
        super().__init__(config, run_dir, progress=progress, initialise=initialise, spec=spec)
        self.n_devices = self.mesh.devices.size
        names = ("the labelled batch (--labelled-batch-size, at most --labels)", "--batch-size")
        for name, size in zip(names, self.batch_sizes, strict=True):
            if size % self.n_devices:
                raise ValueError(f"{name} = {size} does not split over {self.n_devices} devices: "
                                 f"make it a multiple of the number of devices")
        self.svi_state = self._replicate(self.svi_state)
        step = {"semi-supervised": self._train_step, "unsupervised": self._train_step_unsupervised,
                "supervised": self._train_step_supervised}[self.task]
        self._step_fn = jax.jit(step, out_shardings=self.replicated)

    def _replicate(self, tree: Any) -> Any:
        if isinstance(jax.tree_util.tree_leaves(tree)[0], jax.ShapeDtypeStruct):
            return tree  # only the structure (initialise=False): the values come from a checkpoint
        return jax.device_put(tree, self.replicated)

    def _array(self, x: np.ndarray, dtype: Any = np.float32) -> jax.Array:
        """Data arrays are replicated on every device of the mesh."""
        x = np.asarray(x, dtype)
        if dtype == np.float32:
            x = x.reshape(len(x), int(np.prod(x.shape[1:])))
        return jax.device_put(x, self.replicated)

    def _step_args(self, idx_l: np.ndarray | None, idx_u: np.ndarray, step: int,
                   beta: float) -> tuple:
        """The one-device arguments with the index batches split along the mesh."""
        args = list(super()._step_args(idx_l, idx_u, step, beta))
        for i in _INDEX_ARGS[self.task]:
            args[i] = jax.device_put(np.asarray(args[i]), self.batch_sharding)
        return tuple(args)

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        super().load_checkpoint(path)
        self.svi_state = self._replicate(jax.device_get(self.svi_state))

    def summary_extras(self) -> dict[str, Any]:
        return {**super().summary_extras(), "devices": int(self.n_devices)}
