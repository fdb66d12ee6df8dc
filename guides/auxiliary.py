"""The auxiliary-variable guide family of ADGM and SDGM (Maaløe, Sønderby, Sønderby, Winther 2016).

Inference model (the paper's eq. for both models):

    q(a, y, z | x) = q(a | x) q(y | a, x) q(z | a, y, x).

``a`` is sampled **once** per data point, before and outside the enumeration of the label: the sum
over y of the unlabelled bound is taken with the same ``a`` for every label (Pyro's enumeration of
``y`` adds a dimension to the left of the data plate, and ``a`` has none). ``y`` is then enumerated
in parallel by :func:`ppl_dgm.guides.label.label_site` (or, for a labelled point, scored by the
classification term alpha * log q(y | a, x)), and ``z`` is sampled for each value of ``y``. With
``a`` included the bounds are M2's:

    -L(x, y) = E_q(a,z|x,y)[log p(x, y, z, a) - log q(a | x) - log q(z | a, y, x)],
    -U(x)    = E_q(a|x)[ sum_y q(y|a,x) (E_q(z|a,y,x)[log p(x,y,z,a) - log q(z|a,y,x)]
                                        - log q(y|a,x)) - log q(a|x) ].

Every network has several inputs projected separately and summed (the authors' ``Dense(a) +
Dense(x) + Dense(y)``, :class:`~ppl_dgm.nn.torch_blocks.MultiInputMLP`), so under enumeration the
projections of x and a are computed once per data point and only the label's projection varies.

Monte Carlo samples of ``a`` (``num_particles`` vectorised particles, a plate left of the data
plate). Standard Pyro particles give every particle its own ``a`` and its own enumeration of y: an
unbiased estimate of -U(x). The authors' code instead averages q(y | a, x) over the Monte Carlo
samples of a *before* it weighs the per-label bounds,

    -U(x) ~= sum_y qbar(y|x) (1/S sum_s L_s(x, y)) + H[qbar(y|x)],
    qbar(y|x) = 1/S sum_s q(y|a_s,x),

which is what ``average_y_over_particles=True`` (the registered default) does: in training mode,
when ``a`` carries particle dimensions, the enumerated site's distribution is qbar for every
particle, and the ELBO's mean over particles becomes exactly the expression above. It is the bound
of the family q(a|x) qbar(y|x) q(z|a,y,x) (qbar estimated from the particles). In ``eval()`` mode
(validation ELBO, importance-weighted log-likelihood, per-site KL) each particle keeps its own
q(y | a, x), so the reported numbers are ordinary ELBO/IWAE estimates.

The labelled classification term with S particles is, as in the authors' code (their density layer
averages the softmax outputs before the log), alpha * log qbar(y | x) = alpha * log (1/S sum_s
q(y | a_s, x)): ``classification_log_mean=True``, the registered default. With ``False`` it is the
mean over particles of alpha * log q(y | a_s, x) (a lower value by Jensen's inequality). With one
particle both are alpha * log q(y | a, x).

At test time the prediction averages q(y | a, x) over ``num_samples`` draws of a ~ q(a | x) (the
authors use 100): :meth:`AuxiliaryGuide.classify`.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn
from torch.nn import functional as F

from ppl_dgm.guides.label import label_site
from ppl_dgm.nn.torch_blocks import MLP, GaussianHead, MultiInputMLP


def average_over_particles(logits: torch.Tensor, event_dims: int = 1,
                           plate_dims: int = 1) -> torch.Tensor:
    """log of the mean of softmax(logits) over every dimension left of the ``plate_dims`` plates.

    ``logits`` has shape ``(*particles, *plates, n_classes)``; the result has shape
    ``(1,..., 1, *plates, n_classes)``: log qbar(y | x) = log (1/S) sum_s q(y | a_s, x).
    """
    lead = logits.dim() - event_dims - plate_dims
    if lead <= 0:
        return logits
    dims = tuple(range(lead))
    count = math.prod(logits.shape[:lead])
    log_q = torch.log_softmax(logits, dim=-1)
    return torch.logsumexp(log_q, dim=dims, keepdim=True) - math.log(count)


class AuxiliaryGuide(nn.Module):
    """q(a | x) q(y | a, x) q(z | a, y, x), shared by ADGM and SDGM.

    ``hidden`` gives every network's hidden layers (the authors: two of 500 units); ``a_dim`` and
    ``z_dim`` are 100 in the paper. ``alpha`` weighs the classification term of labelled points.
    See the module docstring for ``average_y_over_particles`` and ``classification_log_mean``.
    ``train_q_a=False`` leaves q(a | x)'s weights at their initial values (they get no gradient, so
    neither the optimiser nor a weight prior moves them), as the ADGM workshop code does.
    """

    def __init__(self, x_dim: int, n_classes: int, a_dim: int, z_dim: int, hidden: list[int],
                 activation: str = "relu", batch_norm: bool = False, alpha: float = 0.0,
                 average_y_over_particles: bool = True,
                 classification_log_mean: bool = True, train_q_a: bool = True) -> None:
        super().__init__()
        self.n_classes, self.a_dim, self.z_dim = n_classes, a_dim, z_dim
        self.alpha = alpha
        self.average_y_over_particles = average_y_over_particles
        self.classification_log_mean = classification_log_mean
        # q(a | x)
        self.a_net = MLP(x_dim, hidden, activation, batch_norm)
        self.a_head = GaussianHead(hidden[-1], a_dim)
        self.train_q_a = bool(train_q_a)
        for parameter in [*self.a_net.parameters(), *self.a_head.parameters()]:
            parameter.requires_grad_(self.train_q_a)
        # q(y | a, x): Dense(x) + Dense(a)
        self.y_net = MultiInputMLP([x_dim, a_dim], hidden, activation, batch_norm)
        self.y_logits = nn.Linear(hidden[-1], n_classes)
        # q(z | a, y, x): Dense(x) + Dense(a) + Dense(y)
        self.z_net = MultiInputMLP([x_dim, a_dim, n_classes], hidden, activation, batch_norm)
        self.z_head = GaussianHead(hidden[-1], z_dim)

    # ------------------------------------------------------------------ the three factors
    def q_a(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of q(a | x) (detached from q(a|x)'s weights when ``train_q_a`` is off: they
        then get no gradient, so neither the optimiser nor the weight prior moves them)."""
        loc, scale = self.a_head(self.a_net(x))
        if not self.train_q_a:
            return loc.detach(), scale.detach()
        return loc, scale

    def q_y_logits(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | a, x); ``a`` may carry leading particle dimensions."""
        return self.y_logits(self.y_net(x, a))

    def q_z(self, x: torch.Tensor, a: torch.Tensor,
            y_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of q(z | a, y, x); inputs broadcast (y may carry enumeration dims)."""
        return self.z_head(self.z_net(x, a, y_onehot))

    # ------------------------------------------------------------------ the Pyro program
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.q_a(x)
            with poutine.scale(scale=beta):
                # sampled once per data point, outside the enumeration of y
                a = pyro.sample("a", dist.Normal(loc, scale).to_event(1))
            logits = self.q_y_logits(x, a)
            average = self.average_y_over_particles if y is None else self.classification_log_mean
            if average and self.training:
                logits = average_over_particles(logits)
            y = label_site(logits, y, self.alpha, beta)
            loc, scale = self.q_z(x, a, F.one_hot(y, self.n_classes).to(x.dtype))
            with poutine.scale(scale=beta):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def classify(self, x: torch.Tensor, num_samples: int = 1,
                 chunk_size: int = 25) -> torch.Tensor:
        """(1/S) sum_s q(y | a_s, x) with a_s ~ q(a | x), S = ``num_samples``: shape (B, n_classes).

        The S standard-normal draws are taken at once (``torch.randn(S, B, a_dim)``) and pushed
        through the classifier ``chunk_size`` samples at a time, so memory stays bounded.
        """
        loc, scale = self.q_a(x)
        eps = torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)
        probs = x.new_zeros(x.shape[0], self.n_classes)
        for chunk in torch.split(eps, chunk_size):
            a = loc + scale * chunk
            probs = probs + torch.softmax(self.q_y_logits(x, a), dim=-1).sum(0)
        return probs / num_samples

    @torch.no_grad()
    def sample_class_probs(self, x: torch.Tensor,
                           num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """q(y | a_s, x) for ``num_samples`` draws a_s ~ q(a | x), shape (S, B, n_classes), and
        q(a | x)'s standard deviations (B, a_dim): what the diagnostics of the auxiliary variable
        read (``ppl_dgm.infer.auxiliary_diagnostics``)."""
        loc, scale = self.q_a(x)
        a = loc + scale * torch.randn((num_samples, *loc.shape), dtype=loc.dtype,
                                      device=loc.device)
        return torch.softmax(self.q_y_logits(x, a), dim=-1), scale


def build_guide(hparams: dict[str, Any], data: Any) -> AuxiliaryGuide:
    """The auxiliary guide from a registry ``hparams`` dict (``alpha`` from the trainer)."""
    return AuxiliaryGuide(
        data.x_dim, data.n_classes, a_dim=hparams["a_dim"], z_dim=hparams["z_dim"],
        hidden=list(hparams["hidden"]), activation=hparams["activation"],
        batch_norm=hparams["batch_norm"], alpha=hparams.get("alpha", 0.0),
        average_y_over_particles=hparams.get("average_y_over_particles", True),
        classification_log_mean=hparams.get("classification_log_mean", True),
        train_q_a=hparams.get("train_q_a", True),
    )
