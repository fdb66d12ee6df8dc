"""The ladder guide (Sønderby, Raiko, Maaløe, Sønderby, Winther, NIPS 2016).

A deterministic bottom-up pass, d_1 = MLP(x), d_i = MLP(d_{i-1}), gives for every stochastic layer
a likelihood estimate (mu_hat_i, var_hat_i) = heads(d_i). Sampling then goes top-down:

    q(z_L | x) = N(mu_hat_L, var_hat_L),
    q(z_i | z_{i+1}, x) = N(mu_q, var_q) for i < L, where (mu_p, var_p) = top-down(z_{i+1}) and
    var_q = 1 / (1/var_hat + 1/var_p),   mu_q = (mu_hat/var_hat + mu_p/var_p) * var_q

(the precision-weighted merge of the bottom-up estimate and the top-down parameters).

The pieces are separate so other ladder-style guides (CaGeM's) can reuse them:
:func:`precision_weighted_merge` (a pure function), :class:`BottomUp` (the deterministic pass with
its likelihood estimates) and :class:`LadderGuide` (which accepts any top-down networks).

Paper choices: two-layer MLPs per connection, batch norm in hidden layers and on the estimate heads,
leaky ReLU, a variance floor. Options: whether the top-down networks are the generative model's
p(z_i | z_{i+1}) (``top_down=model.top_down``: the paper's description) or the guide's own
networks of the same shape (``top_down=None``: the default of the authors' scripts); and what
each bottom-up step reads: the previous hidden state, d_i = MLP(d_{i-1}) (``only_mu_up=False``,
the default: the paper's description), or the previous mean estimate, d_i = MLP(mu_hat_{i-1})
(``only_mu_up=True``: the default of the authors' script, ``-only_mu_up True``).
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


def precision_weighted_merge(loc_hat: torch.Tensor, scale_hat: torch.Tensor,
                             loc_p: torch.Tensor, scale_p: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised product N(loc_hat, scale_hat^2) * N(loc_p, scale_p^2): ``(loc, scale)``.

    var = 1 / (1/var_hat + 1/var_p) and loc = (loc_hat/var_hat + loc_p/var_p) * var (the LVAE
    paper's precision-weighted combination). Arguments broadcast against each other.
    """
    prec_hat = scale_hat.pow(-2)
    prec_p = scale_p.pow(-2)
    var = 1.0 / (prec_hat + prec_p)
    loc = (loc_hat * prec_hat + loc_p * prec_p) * var
    loc, scale = torch.broadcast_tensors(loc, var.sqrt())
    return loc, scale


class BottomUp(nn.ModuleList):
    """The deterministic bottom-up pass with a likelihood estimate per stochastic layer.

    ``self[k].mlp`` maps d_k (d_0 = x) to d_{k+1} with two hidden layers of ``hidden_dims[k]``
    units; ``self[k].head`` maps d_{k+1} to (mu_hat_{k+1}, scale_hat_{k+1}). With ``only_mu_up``
    the MLP of layer k > 0 reads mu_hat_k instead of d_k (the authors' script).
    """

    def __init__(self, x_dim: int, z_dims: Sequence[int], hidden_dims: Sequence[int],
                 activation: str = "leaky_relu", batch_norm: bool = True,
                 min_scale: float = PAPER_MIN_SCALE, only_mu_up: bool = False) -> None:
        check_lvae_dims(z_dims, hidden_dims)
        in_dims = [x_dim, *(z_dims[:-1] if only_mu_up else hidden_dims[:-1])]
        super().__init__(
            GaussianMLP(in_dims[k], hidden_dims[k], z_dims[k], activation, batch_norm, min_scale)
            for k in range(len(z_dims))
        )
        self.only_mu_up = only_mu_up

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(mu_hat_1, scale_hat_1), ..., (mu_hat_L, scale_hat_L)]."""
        d = x
        estimates = []
        for layer in self:
            d = layer.mlp(d)
            estimates.append(layer.head(d))
            if self.only_mu_up:
                d = estimates[-1][0]
        return estimates


class LadderGuide(nn.Module):
    """The LVAE inference model; ``forward(x, y=None, *, beta=1.0)`` is the Pyro guide.

    ``top_down[k]`` maps z_{k+2} to the top-down (mu_p, scale_p) of z_{k+1} (k = 0..L-2). Pass the
    generative model's ``top_down`` to share it; with ``None`` the guide makes its own networks
    (``hidden_dims[k + 1]`` units per hidden layer, as the authors' encoder). ``only_mu_up``: see
    :class:`BottomUp`. Sites are sampled top-down (z_L first), like the model. ``y`` is ignored.
    """

    def __init__(self, x_dim: int, z_dims: Sequence[int], hidden_dims: Sequence[int],
                 activation: str = "leaky_relu", batch_norm: bool = True,
                 min_scale: float = PAPER_MIN_SCALE,
                 top_down: nn.ModuleList | None = None, only_mu_up: bool = False) -> None:
        super().__init__()
        self.z_dims = list(z_dims)
        self.up = BottomUp(x_dim, z_dims, hidden_dims, activation, batch_norm, min_scale,
                           only_mu_up)
        L = len(z_dims)
        if top_down is None:
            top_down = nn.ModuleList(
                GaussianMLP(z_dims[k + 1], hidden_dims[k + 1], z_dims[k], activation, batch_norm,
                            min_scale)
                for k in range(L - 1)
            )
        elif len(top_down) != L - 1:
            raise ValueError(f"need {L - 1} top-down networks, got {len(top_down)}")
        self.top_down = top_down

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        estimates = self.up(x)
        L = len(self.z_dims)
        zs = {}
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = estimates[L - 1]
            with kl_scale(beta):
                z = pyro.sample(f"z{L}", dist.Normal(loc, scale).to_event(1))
            zs[L] = z
            for i in range(L - 1, 0, -1):
                loc_p, scale_p = self.top_down[i - 1](z)
                loc, scale = precision_weighted_merge(*estimates[i - 1], loc_p, scale_p)
                with kl_scale(beta):
                    z = pyro.sample(f"z{i}", dist.Normal(loc, scale).to_event(1))
                zs[i] = z
        return zs
