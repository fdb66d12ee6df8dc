"""The plain bottom-up hierarchical guide (the LVAE paper's "VAE" baseline, Sønderby et al. 2016).

    q(z_1..z_L | x) = q(z_1 | x) prod_{i=2}^{L} q(z_i | z_{i-1}),

each factor a diagonal Gaussian whose mean and variance come from a two-layer MLP of the layer
below (the paper's "each connection a two-layer MLP"), with batch norm in the hidden layers and on
the mean/variance heads. Sites are sampled bottom-up: z1 first.

Parameter names match the bottom-up half of :class:`ppl_dgm.guides.ladder.LadderGuide`
(``up[k].mlp``, ``up[k].head``), so that with one stochastic layer the two guides are the same
function of the same state dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_dgm.infer.site_scales import kl_scale
from ppl_dgm.models.common import PAPER_MIN_SCALE, check_lvae_dims
from ppl_dgm.nn.torch_blocks import GaussianMLP


class HierarchicalGuide(nn.Module):
    """q(z_1 | x) prod q(z_i | z_{i-1}); ``forward(x, y=None, *, beta=1.0)`` is the Pyro guide.

    ``up[k]`` is q(z_{k+1} | level k) with ``hidden_dims[k]`` units in each of its two hidden
    layers (level 0 is x). ``y`` is accepted for the common signature and ignored.
    """

    def __init__(self, x_dim: int, z_dims: Sequence[int], hidden_dims: Sequence[int],
                 activation: str = "leaky_relu", batch_norm: bool = True,
                 min_scale: float = PAPER_MIN_SCALE) -> None:
        super().__init__()
        check_lvae_dims(z_dims, hidden_dims)
        self.z_dims = list(z_dims)
        in_dims = [x_dim, *z_dims[:-1]]
        self.up = nn.ModuleList(
            GaussianMLP(in_dims[k], hidden_dims[k], z_dims[k], activation, batch_norm, min_scale)
            for k in range(len(z_dims))
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        h = x
        zs = []
        with pyro.plate("data", x.shape[0], dim=-1):
            for k, layer in enumerate(self.up):
                loc, scale = layer(h)
                with kl_scale(beta):
                    h = pyro.sample(f"z{k + 1}", dist.Normal(loc, scale).to_event(1))
                zs.append(h)
        return zs
