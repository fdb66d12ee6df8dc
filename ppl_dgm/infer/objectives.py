"""Training objectives, each a loss per data point built from a Pyro ELBO's ``differentiable_loss``.

Using ``differentiable_loss`` (rather than ``SVI.step``) keeps the parameters ordinary torch
parameters, so plain torch optimisers, gradient clipping, learning-rate schedules and data-parallel
wrappers (DDP, Lightning) apply unchanged; it is the stochastic variational inference step of
Pyro's ``examples/svi_lightning.py``.
"""

from __future__ import annotations

import warnings

import torch
from pyro.infer import ELBO

from ppl_dgm.pair import Pair

# A labelled batch has no enumerated site; TraceEnum_ELBO is still the right (exact) estimator.
warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites configured")


def unsupervised_loss(pair: Pair, elbo: ELBO, x: torch.Tensor,
                      beta: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """-ELBO(x) averaged over the batch."""
    loss = elbo.differentiable_loss(pair.model, pair.guide, x, None, beta=beta) / x.shape[0]
    return loss, {"loss": loss.item()}


def semi_supervised_loss(pair: Pair, elbo: ELBO, x_l: torch.Tensor, y_l: torch.Tensor,
                         x_u: torch.Tensor,
                         beta: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """mean_labelled [L(x, y) + alpha * CE] + mean_unlabelled U(x), as the authors' code weighs them.

    The labelled bound and the classification term come from one guide run with ``y`` observed; the
    unlabelled bound from a run with ``y`` enumerated. Both batch means get the same weight.
    """
    loss_l = elbo.differentiable_loss(pair.model, pair.guide, x_l, y_l, beta=beta) / x_l.shape[0]
    loss_u = elbo.differentiable_loss(pair.model, pair.guide, x_u, None, beta=beta) / x_u.shape[0]
    loss = loss_l + loss_u
    return loss, {"loss": loss.item(), "loss_labelled": loss_l.item(),
                  "loss_unlabelled": loss_u.item()}


def supervised_loss(pair: Pair, elbo: ELBO, x: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """-log p(y | x) per observed label (for discriminative programs with an empty guide)."""
    loss = elbo.differentiable_loss(pair.model, pair.guide, x, y) / y.numel()
    return loss, {"loss": loss.item()}
