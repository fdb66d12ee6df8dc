"""Importance-weighted evaluation (IWAE estimator) for any model/guide pair.

log p(x) ~= log (1/K) sum_k p(x, h_k) / q(h_k | x),  h_k ~ q(h | x),

where h are all latent variables of the guide: continuous ones are sampled, and so is a discrete
label (not enumerated), which keeps the estimator generic; a pair built with ``iw_enumerate=True``
(CaGeM) has its enumerated sites summed exactly inside each weight instead. At K = 1 the
expectation of the sampled estimator is the ELBO; that of the summed one is a tighter bound: its
weight is sum_y q(y | .) w_y, and log sum_y q(y | .) w_y >= sum_y q(y | .) log w_y (Jensen), whose
expectation is the ELBO with y summed out, so it lies between the ELBO and log p(x) (equal to the
ELBO only where w_y does not depend on y). Either increases with K towards log p(x). Particles are
vectorised with an outer plate and processed in chunks of ``chunk_size`` so that K = 5000 fits in
memory.

Every estimator here runs the pair in evaluation mode (batch norm with its running statistics, one
draw of each latent per particle) whatever mode the caller left it in, and restores that mode after:
in training mode batch statistics of the evaluated batch and particle averaging would move the
estimate (by up to 1 nat on a tiny model, above the true log p(x)).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO

from ppl_dgm.infer import psis
from ppl_dgm.pair import Pair


@contextmanager
def evaluation_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module.eval()`` for the duration of the block, then the caller's mode again."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def _site_log_prob(site: dict, shape: tuple[int, int]) -> torch.Tensor:
    lp = site["fn"].log_prob(site["value"])
    if site.get("mask") is not None:
        lp = lp * site["mask"]
    lp = lp * site["scale"]
    return torch.broadcast_to(lp, shape) if lp.dim() <= len(shape) else lp.reshape(shape)


@torch.no_grad()
def log_weights(pair: Pair, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """log p(x, h) - log q(h | x) for ``num_samples`` guide samples: shape ``(num_samples, B)``."""
    with evaluation_mode(pair):
        return _log_weights(pair, x, num_samples)


def _log_weights(pair: Pair, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    dim = -(pair.max_plate_nesting + 1)
    shape = (num_samples, x.shape[0])

    def vectorised(fn):
        def wrapped():
            with pyro.plate("iw_particles", num_samples, dim=dim):
                return fn(x, None)
        return wrapped

    guide = vectorised(pair.guide)
    if getattr(pair, "iw_enumerate", False):  # enumerated sites summed exactly (CaGeM's y)
        guide = poutine.enum(guide, first_available_dim=dim - 1)
    guide_trace = poutine.trace(guide).get_trace()
    model_trace = poutine.trace(
        poutine.replay(vectorised(pair.model), trace=guide_trace)).get_trace()
    if getattr(pair, "iw_enumerate", False):
        return _summed_log_weights(model_trace, guide_trace, shape)
    log_w = x.new_zeros(shape)
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            log_w = log_w + _site_log_prob(site, shape)
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            log_w = log_w - _site_log_prob(site, shape)
    return log_w


def _summed_log_weights(model_trace, guide_trace, shape: tuple[int, int]) -> torch.Tensor:
    """log sum_y p(x, y, h_y) / q(h_y | x, y) over the values y of the guide's enumerated sites.

    With y enumerated (``poutine.enum``: one value per position of the dimensions left of the
    particles), the weight of a particle is sum_y q(y | .) p(x, y, h) / (q(y | .) q(h | .)): q(y | .)
    cancels, so the enumerated sites of the guide are not subtracted, and the log-weights of all the
    values are log-sum-exp'ed. An unbiased estimate of p(x) with y summed out, not sampled.
    """
    log_w = torch.zeros(())
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            log_w = log_w + _masked_scaled_log_prob(site)
    for site in guide_trace.nodes.values():
        if (site["type"] == "sample" and not site["is_observed"]
                and site["infer"].get("_enumerate_dim") is None):
            log_w = log_w - _masked_scaled_log_prob(site)
    log_w = torch.broadcast_to(log_w, (*log_w.shape[:-len(shape)], *shape))
    return log_w.reshape(-1, *shape).logsumexp(0)


def _masked_scaled_log_prob(site: dict) -> torch.Tensor:
    lp = site["fn"].log_prob(site["value"])
    if site.get("mask") is not None:
        lp = lp * site["mask"]
    return lp * site["scale"]


@torch.no_grad()
def log_likelihood(pair: Pair, x: torch.Tensor, num_samples: int, chunk_size: int = 500,
                   return_log_weights: bool = False):
    """Per-example IWAE estimate of log p(x) with ``num_samples`` particles, in chunks."""
    chunks = [log_weights(pair, x, min(chunk_size, num_samples - start))
              for start in range(0, num_samples, chunk_size)]
    log_w = torch.cat(chunks, dim=0)
    ll = torch.logsumexp(log_w, dim=0) - math.log(num_samples)
    return (ll, log_w) if return_log_weights else ll


def pareto_k(log_w: torch.Tensor) -> np.ndarray:
    """Pareto-smoothed importance sampling k-hat per example (``log_w`` of shape (K, B)).

    k-hat > 0.7 flags an unreliable importance-sampling estimate (Vehtari et al.); the torch face of
    :func:`ppl_dgm.infer.psis.pareto_k`.
    """
    return psis.pareto_k(log_w.double().cpu().numpy())


@torch.no_grad()
def elbo_per_example(pair: Pair, elbo: ELBO, x: torch.Tensor) -> float:
    """The ELBO (beta = 1, y unobserved and enumerated where the pair has one), nats per example."""
    with evaluation_mode(pair):
        return -elbo.loss(pair.model, pair.guide, x, None) / x.shape[0]
