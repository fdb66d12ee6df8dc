"""ADGM, the auxiliary deep generative model (Maaløe, Sønderby, Sønderby, Winther, ICML 2016).

Generative model:  p(y) p(z) p(x | y, z) p(a | x, y, z),
    p(y) = Cat(1/K),  p(z) = N(0, I),  p(x | y, z) = Bernoulli(logits = f(y, z)),
    p(a | x, y, z) = N(mu(x, y, z), sigma^2(x, y, z)).
Inference model:   q(a | x) q(y | a, x) q(z | a, y, x)  (``ppl_dgm.guides.auxiliary``).

The auxiliary variable a leaves the marginal p(x, y, z) of M2 unchanged (integrating a out of
p(a | x, y, z) gives 1) but makes the variational distribution richer: marginalising a out of q
gives a q(y, z | x) that is a continuous mixture, not a mean-field product.

The registered recipe (``ppl_dgm/registry.py``): every MLP two hidden layers of 500 ReLU units, a
and z 100-dimensional, Adam 3e-4 decayed x0.75 every 200 epochs down to 3e-5, global-norm gradient
clipping at 5 then element-wise at 1, 100 labelled + 100 unlabelled points per step, alpha =
0.1 N / N_l, test predictions averaged over 100 samples of a. Where it departs from the authors'
workshop script (``ml-lab/auxiliary-deep-generative-models``), each an option, all set by
``--preset workshop`` (``ppl_dgm/presets.py``, which lists what still differs): one sample of a per
step (theirs 10), PyTorch's default initialisation (``weight_init="glorot"``), no weight prior
(``--weight-prior-std 1``), batch normalisation on (theirs has none), q(a|x) trained (their code
leaves its weights out: ``train_q_a=false``), alpha 0.1 N / N_l (theirs 1200 in this objective's
units). The paper's p(a|x,y,z) and q(z|a,y,x) are kept: their workshop code scores a under N(0, I)
and its q(z|y,x) does not read a. On MNIST with 100 labels, in 8-minute runs, their initialisation
and turning batch norm off each made the test error worse (benchmarks/results/adgm_kl/).
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
from ppl_dgm.nn.torch_blocks import GaussianHead, MultiInputMLP, init_weights
from ppl_dgm.pair import Pair


class ADGMModel(nn.Module):
    """p(y) p(z) p(x | y, z) p(a | x, y, z); ``y=None`` leaves y to the guide (enumerated)."""

    def __init__(self, x_dim: int, n_classes: int, a_dim: int, z_dim: int, hidden: list[int],
                 activation: str = "relu", batch_norm: bool = False) -> None:
        super().__init__()
        self.n_classes, self.a_dim, self.z_dim = n_classes, a_dim, z_dim
        # p(x | y, z): Dense(z) + Dense(y)
        self.x_net = MultiInputMLP([z_dim, n_classes], hidden, activation, batch_norm)
        self.x_logits = nn.Linear(hidden[-1], x_dim)
        # p(a | x, y, z): Dense(x) + Dense(y) + Dense(z)
        self.a_net = MultiInputMLP([x_dim, n_classes, z_dim], hidden, activation, batch_norm)
        self.a_head = GaussianHead(hidden[-1], a_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=beta):
                y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.n_classes)), obs=y)
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            y_onehot = F.one_hot(y, self.n_classes).to(x.dtype)
            logits = self.x_logits(self.x_net(z, y_onehot))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)
            loc, scale = self.a_head(self.a_net(x, y_onehot, z))
            with poutine.scale(scale=beta):
                pyro.sample("a", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def sample_x(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means of x for z ~ p(z) and the given (or uniformly drawn) labels."""
        device = self.x_logits.weight.device
        if y is None:
            y = torch.randint(self.n_classes, (n,), device=device)
        z = torch.randn(n, self.z_dim, device=device)
        h = self.x_net(z, F.one_hot(y.to(device), self.n_classes).float())
        return torch.sigmoid(self.x_logits(h))


def network_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments shared by the ADGM/SDGM generative models."""
    return dict(a_dim=hparams["a_dim"], z_dim=hparams["z_dim"], hidden=list(hparams["hidden"]),
                activation=hparams["activation"], batch_norm=hparams["batch_norm"])


def build(hparams: dict[str, Any], data: Any) -> Pair:
    """The ADGM pair for ``data`` (needs ``x_dim``, ``n_classes``; ``alpha`` from the hparams)."""
    p = ADGMModel(data.x_dim, data.n_classes, **network_hparams(hparams))
    pair = Pair(p, build_guide(hparams, data), max_plate_nesting=1)
    init_weights(pair, hparams.get("weight_init", "torch"))
    return pair
