"""The plain bottom-up hierarchical guide (the LVAE paper's "VAE" baseline) as a NumPyro program.

The NumPyro twin of ``guides/hierarchical.py``:

    q(z_1..z_L | x) = q(z_1 | x) prod_{i=2}^{L} q(z_i | z_{i-1}),

each factor a diagonal Gaussian from a two-layer MLP of the layer below (batch norm in the hidden
layers and on the mean/variance heads). Sites are sampled bottom-up: z1 first. The networks are
``q_up_{k}`` (q(z_{k+1} | level k), level 0 being x): the same names and modules as the bottom-up
half of :class:`ppl_dgm.guides.ladder_numpyro.LadderGuide`, so that with one stochastic layer the
two guides are the same function of the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ppl_dgm.infer.numpyro_site_scales import kl_scale
from ppl_dgm.models.common import PAPER_MIN_SCALE, check_lvae_dims
from ppl_dgm.nn.flax_blocks import GaussianLayer, network


class HierarchicalGuide:
    """q(z_1 | x) prod q(z_i | z_{i-1}); ``guide(x, y=None, *, beta=1.0, train=True)`` is the
    NumPyro program (``y`` is ignored). ``up[k]`` has ``hidden_dims[k]`` units per hidden layer."""

    def __init__(self, x_dim: int, z_dims: Sequence[int], hidden_dims: Sequence[int],
                 activation: str = "leaky_relu", batch_norm: bool = True,
                 min_scale: float = PAPER_MIN_SCALE) -> None:
        check_lvae_dims(z_dims, hidden_dims)
        self.z_dims, self.batch_norm = list(z_dims), batch_norm
        self.in_dims = [x_dim, *z_dims[:-1]]
        self.up = [GaussianLayer(z_dims[k], hidden_dims[k], activation, batch_norm, min_scale)
                   for k in range(len(z_dims))]

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> list[jax.Array]:
        up = [network(f"q_up_{k}", layer, jnp.zeros((1, self.in_dims[k])),
                      batch_norm=self.batch_norm) for k, layer in enumerate(self.up)]
        h, zs = x, []
        with numpyro.plate("data", x.shape[0]):
            for k, layer in enumerate(up):
                _, loc, scale = layer(h, train=train)
                with kl_scale(beta):
                    h = numpyro.sample(f"z{k + 1}", dist.Normal(loc, scale).to_event(1))
                zs.append(h)
        return zs

