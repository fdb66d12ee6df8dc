"""The enumerated-label guide family: q(y | .) for M2, ADGM, SDGM and CaGeM.

For an unlabelled point the guide's ``y`` site is enumerated in parallel (``TraceEnum_ELBO`` then sums
over the labels exactly: -U(x) = sum_y q(y|x) (-L(x, y)) + H[q(y|x)]). For a labelled point ``y`` is
not a latent variable; instead the guide adds the classification term alpha * log q(y|x) to the
objective as a ``pyro.factor``, so a single SVI step trains everything (as in Pyro's scANVI example).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from ppl_dgm.nn.torch_blocks import MLP, GaussianHead, MultiInputMLP

#: The score-function baseline of a sampled label under ``TraceGraph_ELBO`` (``--elbo trace_graph``):
#: a decaying average of the downstream cost, per batch position (other ELBOs ignore it).
BASELINE = {"use_decaying_avg_baseline": True, "baseline_beta": 0.9}


def label_site(logits: torch.Tensor, y: torch.Tensor | None, alpha: float,
               beta: float = 1.0) -> torch.Tensor:
    """The guide's label: enumerate ``y ~ q(y|.)`` if unlabelled, else score the classifier.

    A guide factor f enters the ELBO as -f, so ``f = -alpha * log q(y|.)`` adds alpha * log q(y|.) to
    the ELBO. ``has_rsample=True`` makes Pyro differentiate the factor directly (with ``False`` it would
    be treated as a score-function term). ``beta`` scales log q(y|.) (KL warm-up); at ``beta = 0``
    the site is masked instead (``poutine.scale`` refuses 0), which keeps q(y|.) as the weights of
    the enumerated sum.
    """
    q_y = dist.Categorical(logits=logits)
    if y is None:
        with poutine.mask(mask=False) if beta == 0 else poutine.scale(scale=beta):
            return pyro.sample("y", q_y, infer={"enumerate": "parallel", "baseline": BASELINE})
    if alpha:
        pyro.factor("classification", -alpha * q_y.log_prob(y), has_rsample=True)
    return y


class LabelGuide(nn.Module):
    """M2's inference model q(y | x) q(z | x, y).

    The classifier is an MLP of x; q(z|x,y) projects x and one-hot y with separate linear maps and
    sums them, so under enumeration the projection of x is computed once per data point.
    """

    def __init__(self, x_dim: int, n_classes: int, z_dim: int, hidden: list[int],
                 activation: str = "softplus", batch_norm: bool = False,
                 alpha: float = 0.0) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.alpha = alpha
        self.classifier = nn.Sequential(MLP(x_dim, hidden, activation, batch_norm),
                                        nn.Linear(hidden[-1], n_classes))
        self.encoder = MultiInputMLP([x_dim, n_classes], hidden, activation, batch_norm)
        self.z_head = GaussianHead(hidden[-1], z_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        with pyro.plate("data", x.shape[0]):
            y = label_site(self.classifier(x), y, self.alpha, beta)
            loc, scale = self.z_head(self.encoder(x, F.one_hot(y, self.n_classes).to(x.dtype)))
            with poutine.scale(scale=beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def classify(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """q(y | x) as probabilities ``(B, n_classes)`` (deterministic: ``num_samples`` unused)."""
        return torch.softmax(self.classifier(x), dim=-1)
