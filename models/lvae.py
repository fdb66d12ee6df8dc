"""The LVAE generative model (Sønderby, Raiko, Maaløe, Sønderby, Winther, NIPS 2016).

    p(x, z_1..z_L) = p(z_L) prod_{i=1}^{L-1} p(z_i | z_{i+1}) p(x | z_1),

    p(z_L) = N(0, I),  p(z_i | z_{i+1}) = N(mu_p,i(z_{i+1}), var_p,i(z_{i+1})),
    p(x | z_1) = Bernoulli(logits = MLP(z_1)).

The same model is trained with two guide families (``ppl_dgm.guides.hierarchical`` for the paper's
"VAE" baseline and ``ppl_dgm.guides.ladder`` for the LVAE), so that inference can be compared on one
model. :func:`build` assembles either pair from hyperparameters. Model and guides share the
Gaussian connection :class:`~ppl_dgm.nn.torch_blocks.GaussianMLP` and the KL warm-up hook
:func:`~ppl_dgm.infer.site_scales.kl_scale`.

Choices taken from the paper (its MNIST model): any number of stochastic layers L with
per-layer sizes (64-32-16-8-4); each connection a two-layer MLP whose width is the deterministic
size of that level (512-256-128-64-32); leaky ReLU; batch normalisation in every hidden layer and
on the latent mean/variance heads but not on the output; a variance floor of about 1e-5. Options,
not the paper: ``activation``, ``batch_norm`` (to reproduce the paper's ablation), ``min_scale``.

Indexing: connection ``k`` (k = 0..L-1) joins level k (x for k = 0, z_k otherwise) and z_{k+1}; it
has ``hidden_dims[k]`` units in each of its two hidden layers, in both directions (the generative
p(z_k | z_{k+1}), or p(x | z_1) for k = 0, and the guide's q(z_{k+1} | level k)). The option
``top_down_widths="lower"`` (ladder guide, unshared networks: the authors' LVAE script) gives the
generative p(z_k | z_{k+1}) connection k-1's width instead, ``hidden_dims[k - 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_dgm.guides.hierarchical import HierarchicalGuide
from ppl_dgm.guides.ladder import LadderGuide
from ppl_dgm.infer.site_scales import kl_scale  # the annealed KL (warm-up) of each latent
from ppl_dgm.models.common import (
    PAPER_MIN_SCALE,  # the paper's variance floor, as a scale floor
    check_lvae_dims,
    check_lvae_hparams,
    lvae_layer_kwargs,
    lvae_top_down_widths,
)
from ppl_dgm.nn.torch_blocks import MLP, GaussianMLP
from ppl_dgm.pair import Pair


class LVAEModel(nn.Module):
    """The generative model p; ``forward(x, y=None, *, beta=1.0)`` is the Pyro model.

    Sites ``z{L}``, ..., ``z1`` are sampled top-down (z_L first), then ``x`` is observed. ``y`` is
    accepted for the common model signature and ignored (the LVAE is unsupervised).
    ``top_down[k]`` is p(z_{k+1} | z_{k+2}) (k = 0..L-2), with ``top_down_hidden[k]`` units in each
    hidden layer (default ``hidden_dims[k + 1]``, the width of z_{k+2}'s level); the ladder guide
    may share it.
    """

    def __init__(self, x_dim: int, z_dims: Sequence[int], hidden_dims: Sequence[int],
                 activation: str = "leaky_relu", batch_norm: bool = True,
                 min_scale: float = PAPER_MIN_SCALE,
                 top_down_hidden: Sequence[int] | None = None) -> None:
        super().__init__()
        check_lvae_dims(z_dims, hidden_dims)
        self.x_dim = x_dim
        self.z_dims = list(z_dims)
        self.hidden_dims = list(hidden_dims)
        L = len(z_dims)
        widths = list(hidden_dims[1:] if top_down_hidden is None else top_down_hidden)
        if len(widths) != L - 1:
            raise ValueError(f"need {L - 1} top-down widths, got {widths}")
        self.top_down_hidden = widths
        self.top_down = nn.ModuleList(
            GaussianMLP(z_dims[k + 1], widths[k], z_dims[k], activation, batch_norm, min_scale)
            for k in range(L - 1)
        )
        # p(x | z_1): two hidden layers (with batch norm), then the output logits (no batch norm).
        self.decoder = MLP(z_dims[0], [hidden_dims[0]] * 2, activation, batch_norm)
        self.logits = nn.Linear(self.decoder.out_dim, x_dim)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    @property
    def n_layers(self) -> int:
        return len(self.z_dims)

    def prior_top(self) -> dist.Distribution:
        """p(z_L) = N(0, I)."""
        d = self.z_dims[-1]
        return dist.Normal(self._zero.expand(d), 1.0 + self._zero.expand(d)).to_event(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        L = self.n_layers
        with pyro.plate("data", x.shape[0], dim=-1):
            with kl_scale(beta):
                z = pyro.sample(f"z{L}", self.prior_top())
            for i in range(L - 1, 0, -1):
                loc, scale = self.top_down[i - 1](z)
                with kl_scale(beta):
                    z = pyro.sample(f"z{i}", dist.Normal(loc, scale).to_event(1))
            logits = self.logits(self.decoder(z))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)
        return logits

    @torch.no_grad()
    def sample_x(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means ``(n, x_dim)`` of ancestral samples from the prior.

        Runs in the module's current mode: call ``eval()`` first so that batch norm uses its running
        statistics rather than those of the n samples.
        """
        z = self.prior_top().sample((n,))
        for i in range(self.n_layers - 1, 0, -1):
            loc, scale = self.top_down[i - 1](z)
            z = dist.Normal(loc, scale).sample()
        return torch.sigmoid(self.logits(self.decoder(z)))


def build(hparams: Mapping[str, Any], data: Any) -> Pair:
    """The LVAE model and the guide ``hparams["guide"]`` (``"ladder"`` or ``"hierarchical"``).

    ``hparams`` keys (defaults: ``ppl_dgm.models.common.LVAE_DEFAULTS``, the paper's MNIST model):
    ``z_dims``, ``hidden_dims``, ``activation``, ``batch_norm``, ``min_scale``, ``guide``, and the
    ladder guide's options (the hierarchical guide ignores them): ``share_top_down`` (the guide's
    top-down path reuses the model's p(z_i | z_{i+1}) networks, as the paper describes; the authors'
    scripts default to separate networks), ``only_mu_up`` (the bottom-up pass reads the previous
    mean estimate, the authors' script's default) and ``top_down_widths`` (``"lower"``: the
    generative top-down networks as wide as the level below, the authors' LVAE script; see
    ``LVAE_DEFAULTS``). ``data`` needs ``x_dim``.
    """
    h = check_lvae_hparams(hparams)
    z_dims, hidden_dims, common = h["z_dims"], h["hidden_dims"], lvae_layer_kwargs(h)
    p = LVAEModel(int(data.x_dim), z_dims, hidden_dims, **common,
                  top_down_hidden=lvae_top_down_widths(h))
    if h["guide"] == "ladder":
        shared = p.top_down if h["share_top_down"] else None
        q: nn.Module = LadderGuide(int(data.x_dim), z_dims, hidden_dims, top_down=shared,
                                   only_mu_up=bool(h["only_mu_up"]), **common)
    elif h["guide"] == "hierarchical":
        q = HierarchicalGuide(int(data.x_dim), z_dims, hidden_dims, **common)
    else:
        raise ValueError(f"unknown LVAE guide {h['guide']!r}; choose 'ladder' or 'hierarchical'")
    return Pair(p, q, max_plate_nesting=1)
