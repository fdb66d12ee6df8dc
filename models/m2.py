"""M2, the semi-supervised VAE (Kingma, Rezende, Mohamed, Welling 2014).

Generative model:  p(y) = Cat(1/K),  p(z) = N(0, I),  p(x | y, z) = Bernoulli(logits = f(y, z)).
Inference model:   q(y | x) q(z | x, y)   (``ppl_dgm.guides.label.LabelGuide``).

The paper's M2 uses one hidden layer of 500 units and a 50-dimensional z. Batch normalisation is an
option (on in the registered defaults: it is part of the auxiliary-model papers' recipe and helps M2
use the unlabelled data). The registered networks are those papers' two ReLU layers of 500 units
(``ppl_dgm.registry``); the paper's are ``--set 'hidden=[500]' --set activation=softplus``.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from ppl_dgm.guides.label import LabelGuide
from ppl_dgm.nn.torch_blocks import MultiInputMLP
from ppl_dgm.pair import Pair


class M2Model(nn.Module):
    """p(y) p(z) p(x | y, z); ``y=None`` leaves y to the guide (enumerated when unlabelled)."""

    def __init__(self, x_dim: int, n_classes: int, z_dim: int, hidden: list[int],
                 activation: str = "softplus", batch_norm: bool = False) -> None:
        super().__init__()
        self.n_classes, self.z_dim = n_classes, z_dim
        self.decoder = MultiInputMLP([z_dim, n_classes], hidden, activation, batch_norm)
        self.x_logits = nn.Linear(hidden[-1], x_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=beta):
                y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.n_classes)), obs=y)
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            logits = self.x_logits(self.decoder(z, F.one_hot(y, self.n_classes).to(x.dtype)))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    @torch.no_grad()
    def sample_x(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means of x for z ~ p(z) and the given (or uniformly drawn) labels."""
        device = self.x_logits.weight.device
        if y is None:
            y = torch.randint(self.n_classes, (n,), device=device)
        z = torch.randn(n, self.z_dim, device=device)
        h = self.decoder(z, F.one_hot(y.to(device), self.n_classes).float())
        return torch.sigmoid(self.x_logits(h))


def build(hparams: dict[str, Any], data: Any) -> Pair:
    """The M2 pair for ``data`` (needs ``x_dim``, ``n_classes``; ``alpha`` from the hparams)."""
    common = dict(z_dim=hparams["z_dim"], hidden=list(hparams["hidden"]),
                  activation=hparams["activation"], batch_norm=hparams["batch_norm"])
    p = M2Model(data.x_dim, data.n_classes, **common)
    q = LabelGuide(data.x_dim, data.n_classes, alpha=hparams.get("alpha", 0.0), **common)
    return Pair(p, q, max_plate_nesting=1)
