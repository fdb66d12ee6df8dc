"""SDGM, the skip deep generative model (Maaløe, Sønderby, Sønderby, Winther, ICML 2016).

Generative model:  p(y) p(z) p(a | y, z) p(x | a, y, z),
    p(y) = Cat(1/K),  p(z) = N(0, I),  p(a | y, z) = N(mu(y, z), sigma^2(y, z)),
    p(x | a, y, z) = Bernoulli(logits = f(a, y, z)).
Inference model:   q(a | x) q(y | a, x) q(z | a, y, x)  (``ppl_dgm.guides.auxiliary``, the same
family as ADGM's).

Making a generative turns the model into a two-stochastic-layer model whose decoder sees z (and y)
through a skip connection. The paper reports that SDGM trains with several Monte Carlo samples per
step (the registered default is 5 vectorised particles; *reconstructed*, configurable with
``--num-particles``); the rest of the recipe is ADGM's (see ``ppl_dgm.models.adgm``).
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from ppl_dgm.guides.auxiliary import build_guide
from ppl_dgm.models.adgm import network_hparams
from ppl_dgm.nn.torch_blocks import GaussianHead, MultiInputMLP, init_weights
from ppl_dgm.pair import Pair


class SDGMModel(nn.Module):
    """p(y) p(z) p(a | y, z) p(x | a, y, z); ``y=None`` leaves y to the guide (enumerated)."""

    def __init__(self, x_dim: int, n_classes: int, a_dim: int, z_dim: int, hidden: list[int],
                 activation: str = "relu", batch_norm: bool = False) -> None:
        super().__init__()
        self.n_classes, self.a_dim, self.z_dim = n_classes, a_dim, z_dim
        # p(a | y, z): Dense(z) + Dense(y)
        self.a_net = MultiInputMLP([z_dim, n_classes], hidden, activation, batch_norm)
        self.a_head = GaussianHead(hidden[-1], a_dim)
        # p(x | a, y, z): Dense(a) + Dense(z) + Dense(y)
        self.x_net = MultiInputMLP([a_dim, z_dim, n_classes], hidden, activation, batch_norm)
        self.x_logits = nn.Linear(hidden[-1], x_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=beta):
                y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.n_classes)), obs=y)
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
                y_onehot = F.one_hot(y, self.n_classes).to(x.dtype)
                loc, scale = self.a_head(self.a_net(z, y_onehot))
                a = pyro.sample("a", dist.Normal(loc, scale).to_event(1))
            logits = self.x_logits(self.x_net(a, z, y_onehot))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    @torch.no_grad()
    def sample_x(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means of x for z ~ p(z), a ~ p(a | y, z) and the given (or random) labels."""
        device = self.x_logits.weight.device
        if y is None:
            y = torch.randint(self.n_classes, (n,), device=device)
        y_onehot = F.one_hot(y.to(device), self.n_classes).float()
        z = torch.randn(n, self.z_dim, device=device)
        loc, scale = self.a_head(self.a_net(z, y_onehot))
        a = loc + scale * torch.randn_like(loc)
        return torch.sigmoid(self.x_logits(self.x_net(a, z, y_onehot)))


def build(hparams: dict[str, Any], data: Any) -> Pair:
    """The SDGM pair for ``data`` (needs ``x_dim``, ``n_classes``; ``alpha`` from the hparams)."""
    p = SDGMModel(data.x_dim, data.n_classes, **network_hparams(hparams))
    pair = Pair(p, build_guide(hparams, data), max_plate_nesting=1)
    init_weights(pair, hparams.get("weight_init", "torch"))
    return pair
