"""Per-latent-site diagnostics for any model/guide pair: KL per site and active units.

Both follow the LVAE paper (Sønderby et al. 2016), which reports the KL of every stochastic layer
and counts the active units of each layer with Burda et al.'s (2015) criterion

    A_u = Cov_x( E_{q(z|x)}[z_u] ) > 0.01.

They are generic: the latent sites are whatever unobserved sample sites the guide has
(``z1`` to ``zL``, ``z``, ``a``, a sampled ``y``...), the data plate is ``pyro.plate("data", ...)``,
and particles are vectorised with an outer plate, as in :mod:`ppl_dgm.infer.importance`. Both run
the pair in ``eval()`` mode (batch-norm running statistics, so a point's result does not depend on
the rest of the batch) and restore the previous mode afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ppl_dgm.pair import Pair


@contextlib.contextmanager
def evaluation_mode(module: torch.nn.Module) -> Iterator[None]:
    """``module.eval()`` and ``torch.no_grad()`` inside the block; the previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def _vectorised(fn, x: torch.Tensor, num_samples: int, dim: int):
    def wrapped():
        with pyro.plate("diagnostic_particles", num_samples, dim=dim):
            return fn(x, None)
    return wrapped


def traces(pair: Pair, x: torch.Tensor, num_samples: int = 1):
    """(guide trace, model trace replayed on it), ``num_samples`` vectorised particles, beta = 1.

    Gradients flow (this is also the building block of :func:`ppl_dgm.infer.free_bits`).
    """
    dim = -(pair.max_plate_nesting + 1)
    guide_trace = poutine.trace(_vectorised(pair.guide, x, num_samples, dim)).get_trace()
    model_trace = poutine.trace(
        poutine.replay(_vectorised(pair.model, x, num_samples, dim), trace=guide_trace)
    ).get_trace()
    return guide_trace, model_trace


def latent_sites(guide_trace) -> list[str]:
    """Names of the guide's unobserved sample sites, in sampling order."""
    return [name for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and not site_is_subsample(site)]


def _log_prob_sum(site: dict) -> torch.Tensor:
    """Sum of the site's log-density over all its particles and data points (unscaled, masked)."""
    lp = site["fn"].log_prob(site["value"])
    if site.get("mask") is not None:
        lp = lp * site["mask"]
    return lp.sum()


def site_log_ratios(pair: Pair, x: torch.Tensor,
                    num_samples: int = 1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-site ``E_q[log q - log p]`` and the total ``E_q[log p(observed | ...)]``, per data point.

    Returns ``(kl, log_lik)``: ``kl[site]`` is a scalar tensor (the Monte Carlo KL estimate of that
    site, averaged over particles and the batch) and ``log_lik`` the mean log-density of the
    observed sites. ``log_lik - sum(kl.values())`` is the ELBO per data point. Differentiable.
    """
    guide_trace, model_trace = traces(pair, x, num_samples)
    return log_ratios_from_traces(guide_trace, model_trace, num_samples * x.shape[0])


def log_ratios_from_traces(guide_trace, model_trace,
                           denom: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """:func:`site_log_ratios` from given traces; sums divided by ``denom`` (particles x data)."""
    kl = {}
    for name in latent_sites(guide_trace):
        if name not in model_trace.nodes:
            raise KeyError(f"guide site {name!r} does not appear in the model")
        kl[name] = (_log_prob_sum(guide_trace.nodes[name])
                    - _log_prob_sum(model_trace.nodes[name])) / denom
    log_lik = torch.zeros(())
    for site in model_trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"]:
            log_lik = log_lik + _log_prob_sum(site) / denom
    return kl, log_lik


def _chunks(x: torch.Tensor, batch_size: int | None) -> list[torch.Tensor]:
    return [x] if batch_size is None or batch_size >= len(x) else list(torch.split(x, batch_size))


def site_kl(pair: Pair, x: torch.Tensor, num_samples: int = 1,
            batch_size: int | None = 1000) -> dict[str, float]:
    """KL per latent site in nats per data point: mean over x of E_q[log q(site) - log p(site)].

    A guide trace is replayed in the model (``num_samples`` particles per point) and the log-density
    ratio is split by site; the values sum to the KL part of the negative ELBO. For a hierarchical
    model this is the LVAE paper's per-layer KL (e.g. ``{"z1": .., ..., "z5": ..}``).
    """
    totals: dict[str, float] = {}
    with evaluation_mode(pair):
        for xb in _chunks(x, batch_size):
            kl, _ = site_log_ratios(pair, xb, num_samples)
            for name, value in kl.items():
                totals[name] = totals.get(name, 0.0) + value.item() * len(xb)
    return {name: total / len(x) for name, total in totals.items()}


def _data_axis(site: dict) -> int:
    for frame in site["cond_indep_stack"]:
        if frame.name == "data":
            return frame.dim
    raise ValueError(f"site {site['name']!r} is not inside pyro.plate('data', ...)")


def unit_variances(pair: Pair, x: torch.Tensor, num_samples: int = 10,
                   batch_size: int | None = 1000) -> dict[str, np.ndarray]:
    """Var_x(E_q[z_u | x]) for every unit u of every continuous latent site (diagonal of Cov_x).

    E_q[z_u | x] is estimated by averaging the guide's conditional means E_q[z_u | parents, x] over
    ``num_samples`` samples of the parents (exact for sites whose parents are only x, and free of
    the sampling noise of z_u itself, which would otherwise inflate the variance of inactive units).
    Discrete sites are skipped. Units are the site's event (and any non-data plate) entries.
    """
    means: dict[str, list[torch.Tensor]] = {}
    with evaluation_mode(pair):
        for xb in _chunks(x, batch_size):
            guide_trace, _ = traces(pair, xb, num_samples)
            for name in latent_sites(guide_trace):
                site = guide_trace.nodes[name]
                fn = site["fn"]
                if fn.support.is_discrete:
                    continue
                try:
                    mean = fn.mean
                except NotImplementedError:
                    mean = site["value"]
                shape = fn.batch_shape + fn.event_shape
                mean = mean.expand(shape)
                event = len(fn.event_shape)
                particle_axis = -(pair.max_plate_nesting + 1) - event
                data_axis = _data_axis(site) - event
                mean = mean.mean(dim=particle_axis, keepdim=True)
                mean = mean.movedim(data_axis, 0).reshape(len(xb), -1)
                means.setdefault(name, []).append(mean)
    return {name: torch.cat(chunks).var(dim=0, unbiased=len(x) > 1).cpu().numpy()
            for name, chunks in means.items()}


def active_units(pair: Pair, x: torch.Tensor, num_samples: int = 10, threshold: float = 0.01,
                 batch_size: int | None = 1000) -> dict[str, int]:
    """Number of active units per continuous latent site: Cov_x(E_q[z_u | x]) > ``threshold``.

    The criterion of Burda et al. (2015) used by the LVAE paper (threshold 0.01); see
    :func:`unit_variances` for the estimate.
    """
    variances = unit_variances(pair, x, num_samples, batch_size)
    return {name: int((v > threshold).sum()) for name, v in variances.items()}
