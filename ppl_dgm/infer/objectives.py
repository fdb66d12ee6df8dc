"""Training objectives, each a loss per data point built from a Pyro ELBO's ``differentiable_loss``
(or, for the ELBOs without one, a surrogate loss whose gradient is the ELBO's gradient estimator:
:func:`loss_and_surrogate`).

Using ``differentiable_loss`` (rather than ``SVI.step``) keeps the parameters ordinary torch
parameters, so plain torch optimisers, gradient clipping, learning-rate schedules and data-parallel
wrappers (DDP, Lightning) apply unchanged; it is the stochastic variational inference step of
Pyro's ``examples/svi_lightning.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from pyro.distributions.util import is_identically_zero
from pyro.infer import ELBO, RenyiELBO, ReweightedWakeSleep, TraceGraph_ELBO
from pyro.infer.util import get_dependent_plate_dims, torch_sum

from ppl_dgm.pair import Pair

# A labelled batch has no enumerated site; TraceEnum_ELBO is still the right (exact) estimator.
warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites configured")


def _renyi_surrogate(elbo: RenyiELBO, model: Callable, guide: Callable, args: tuple,
                     kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``RenyiELBO.loss_and_grads`` without its ``backward``: (-bound, surrogate loss).

    The surrogate is -(1/K) sum_k w_k s_k with the self-normalised weights w_k (detached) of
    ``(1 - alpha) * (log p - log q)`` per data point and s_k the particle's surrogate ELBO, the
    estimator Pyro differentiates; its value is not the loss.
    """
    elbo_particles, surrogate_particles = [], []
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, kwargs):
        sum_dims = get_dependent_plate_dims(model_trace.nodes.values())
        elbo_particle: Any = 0.0
        surrogate_particle: Any = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                log_prob_sum = torch_sum(site["log_prob"], sum_dims)
                elbo_particle = elbo_particle + log_prob_sum.detach()
                surrogate_particle = surrogate_particle + log_prob_sum
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                _, score_function_term, entropy_term = site["score_parts"]
                log_prob_sum = torch_sum(site["log_prob"], sum_dims)
                elbo_particle = elbo_particle - log_prob_sum.detach()
                if not is_identically_zero(entropy_term):
                    surrogate_particle = surrogate_particle - log_prob_sum
                if not is_identically_zero(score_function_term):
                    surrogate_particle = (surrogate_particle + elbo.alpha / (1.0 - elbo.alpha)
                                          * log_prob_sum)
        elbo_particles.append(elbo_particle)
        surrogate_particles.append(surrogate_particle)
    if elbo.vectorize_particles and elbo.num_particles > 1:
        elbos, surrogates = elbo_particles[0], surrogate_particles[0]
    else:
        elbos, surrogates = torch.stack(elbo_particles), torch.stack(surrogate_particles)
    log_weights = (1.0 - elbo.alpha) * elbos
    log_mean_weight = torch.logsumexp(log_weights, dim=0, keepdim=True) - math.log(
        elbo.num_particles)
    bound = log_mean_weight.sum() / (1.0 - elbo.alpha)
    weights = (log_weights - log_mean_weight).exp().detach()
    surrogate = -(weights * surrogates).sum() / elbo.num_particles
    return -bound.detach(), surrogate


def loss_and_surrogate(elbo: ELBO, model: Callable, guide: Callable, *args: Any,
                       **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(the loss estimate, detached; a differentiable scalar whose gradient is the estimator's).

    ``Trace_ELBO``, ``TraceEnum_ELBO`` and ``TraceMeanField_ELBO``: ``differentiable_loss`` is both.
    ``TraceGraph_ELBO``: its surrogate (score-function terms on downstream costs, baselines).
    ``RenyiELBO``: :func:`_renyi_surrogate`. ``ReweightedWakeSleep``: the loss is the wake-theta
    (IWAE) loss, the surrogate wake-theta + wake-phi, as its ``loss_and_grads`` backpropagates.
    Torch optimisers, clipping and schedules then apply to the surrogate's gradients as to any loss.
    """
    if isinstance(elbo, TraceGraph_ELBO):
        loss, surrogate = elbo._loss_and_surrogate_loss(model, guide, args, kwargs)
        return -loss.detach() if torch.is_tensor(loss) else torch.tensor(-loss), surrogate
    if isinstance(elbo, RenyiELBO):
        return _renyi_surrogate(elbo, model, guide, args, kwargs)
    if isinstance(elbo, ReweightedWakeSleep):
        theta_loss, phi_loss = elbo._loss(model, guide, args, kwargs)
        return theta_loss.detach(), theta_loss + phi_loss
    loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
    return loss.detach(), loss


def _stat(value: torch.Tensor, n: int) -> torch.Tensor:
    """A step statistic: a detached float64 scalar on the loss's device (read by the trainer once
    per epoch, not per step)."""
    return value.detach().double() / n


def unsupervised_loss(pair: Pair, elbo: ELBO, x: torch.Tensor,
                      beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-ELBO(x) averaged over the batch, and the step's statistics (device scalars)."""
    value, loss = loss_and_surrogate(elbo, pair.model, pair.guide, x, None, beta=beta)
    return loss / x.shape[0], {"loss": _stat(value, x.shape[0])}


def semi_supervised_loss(pair: Pair, elbo: ELBO, x_l: torch.Tensor, y_l: torch.Tensor,
                         x_u: torch.Tensor,
                         beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """mean_labelled [L(x, y) + alpha * CE] + mean_unlabelled U(x), as the authors' code weighs them.

    The labelled bound and the classification term come from one guide run with ``y`` observed; the
    unlabelled bound from a run with ``y`` enumerated. Both batch means get the same weight.
    """
    value_l, loss_l = loss_and_surrogate(elbo, pair.model, pair.guide, x_l, y_l, beta=beta)
    value_u, loss_u = loss_and_surrogate(elbo, pair.model, pair.guide, x_u, None, beta=beta)
    loss = loss_l / x_l.shape[0] + loss_u / x_u.shape[0]
    value_l, value_u = _stat(value_l, x_l.shape[0]), _stat(value_u, x_u.shape[0])
    return loss, {"loss": value_l + value_u, "loss_labelled": value_l, "loss_unlabelled": value_u}


def supervised_loss(pair: Pair, elbo: ELBO, x: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-log p(y | x) per observed label (for discriminative programs with an empty guide)."""
    value, loss = loss_and_surrogate(elbo, pair.model, pair.guide, x, y)
    return loss / y.numel(), {"loss": _stat(value, y.numel())}


@torch.no_grad()
def pair_sites(pair: Pair, x: torch.Tensor) -> tuple[list[Any], list[str]]:
    """What :func:`ppl_dgm.infer.objective_names.check` needs to know about ``pair``.

    One guide run on the unlabelled points ``x`` (no enumeration: a discrete site is sampled) and
    the model replayed on it, in evaluation mode and with the torch RNG restored afterwards, so a
    trainer's run is unchanged. Returns the guide's latent sites in order, the model's latent site
    names in order.
    """
    from pyro import poutine
    from pyro.poutine.util import site_is_subsample

    from ppl_dgm.infer.objective_names import GuideSite

    rng = torch.get_rng_state()
    training = pair.training
    pair.eval()
    try:
        guide_trace = poutine.trace(pair.guide).get_trace(x, None)
        model_trace = poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(x, None)
        sites = [GuideSite(name, bool(site["fn"].has_rsample))
                 for name, site in guide_trace.nodes.items()
                 if site["type"] == "sample" and not site["is_observed"]
                 and not site_is_subsample(site)]
        latents = [name for name, site in model_trace.nodes.items()
                   if site["type"] == "sample" and not site["is_observed"]
                   and not site_is_subsample(site)]
    finally:
        pair.train(training)
        torch.set_rng_state(rng)
    return sites, latents
