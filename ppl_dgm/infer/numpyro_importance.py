"""Importance-weighted evaluation (IWAE estimator) for NumPyro pairs, the twin of
``ppl_dgm.infer.importance``:

log p(x) ~= log (1/K) sum_k p(x, h_k) / q(h_k | x),  h_k ~ q(h | x),

where h are all latent variables of the guide. As on the Pyro side, continuous ones are sampled and
so is a discrete label (the guide's ``y`` site is not enumerated here: its ``enumerate`` flag only
acts under ``TraceEnum_ELBO``), so log q(y | x) and log p(y) enter each weight; a pair with
``iw_enumerate=True`` (CaGeM) has its enumerated sites summed exactly inside each weight instead. At K = 1 the
expectation of the sampled estimate is the ELBO; the summed one's is a tighter bound, between the
ELBO and log p(x) (log sum_y q(y | .) w_y >= sum_y q(y | .) log w_y by Jensen; equal only where w_y
does not depend on y: ``ppl_dgm.infer.importance``). Either increases with K towards log p(x).

Particle k is one run of the guide seeded with its own key, replayed in the model (``beta = 1``,
batch normalisation on its running statistics); particles are vectorised with ``jax.vmap`` and
processed in jit-compiled chunks of ``chunk_size`` keys so that K = 5000 fits in memory. Importing
this module imports JAX and NumPyro, never torch.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from numpyro import handlers

from ppl_dgm.numpyro_pair import NumPyroPair, Params


def _site_log_prob(site: dict[str, Any], batch: int) -> jax.Array:
    """A site's scaled log-density per data point, shape ``(batch,)``."""
    lp = site["fn"].log_prob(site["value"])
    if site.get("scale") is not None:
        lp = lp * site["scale"]
    return jnp.broadcast_to(lp, (batch,))


def _copy_state(params: Params) -> Params:
    """``params`` with fresh ``$state`` dicts (``flax_module`` updates batch-norm state in place)."""
    return {k: dict(v) if k.endswith("$state") and isinstance(v, dict) else v
            for k, v in params.items()}


def log_weight(pair: NumPyroPair, params: Params, x: jax.Array, rng_key: jax.Array) -> jax.Array:
    """log p(x, h) - log q(h | x) for one guide sample h (seeded with ``rng_key``): shape ``(B,)``.

    Every sample site of the model counts (observed ones included), and every unobserved sample site
    of the guide; a site's ``scale`` multiplies its log-density (``beta = 1``: scale 1).
    """
    batch = x.shape[0]
    guide = handlers.substitute(handlers.seed(pair.guide, rng_key), data=_copy_state(params))
    if pair.iw_enumerate:  # enumerated sites summed exactly (CaGeM's y)
        from numpyro.contrib.funsor import enum

        guide = enum(guide, first_available_dim=-(pair.max_plate_nesting + 1))
    guide_trace = handlers.trace(guide).get_trace(x, None, beta=1.0, train=False)
    model = handlers.replay(
        handlers.substitute(handlers.seed(pair.model, rng_key), data=_copy_state(params)),
        guide_trace)
    model_trace = handlers.trace(model).get_trace(x, None, beta=1.0, train=False)
    if pair.iw_enumerate:
        return _summed_log_weight(model_trace, guide_trace, batch)
    log_w = jnp.zeros(batch)
    for site in model_trace.values():
        if site["type"] == "sample":
            log_w = log_w + _site_log_prob(site, batch)
    for site in guide_trace.values():
        if site["type"] == "sample" and not site["is_observed"]:
            log_w = log_w - _site_log_prob(site, batch)
    return log_w


def _summed_log_weight(model_trace: dict[str, Any], guide_trace: dict[str, Any],
                      batch: int) -> jax.Array:
    """log sum_y p(x, y, h_y) / q(h_y | x, y) over the values of the guide's enumerated sites
    (``ppl_dgm.infer.importance``'s rule: q(y | .) cancels, so enumerated guide sites are not
    subtracted, and the log-weights of all the values are log-sum-exp'ed): shape ``(batch,)``."""
    def log_prob(site: dict[str, Any]) -> jax.Array:
        lp = site["fn"].log_prob(site["value"])
        return lp * site["scale"] if site.get("scale") is not None else lp

    log_w = jnp.zeros(())
    for site in model_trace.values():
        if site["type"] == "sample":
            log_w = log_w + log_prob(site)
    for site in guide_trace.values():
        if (site["type"] == "sample" and not site["is_observed"]
                and site["infer"].get("enumerate") != "parallel"):
            log_w = log_w - log_prob(site)
    log_w = jnp.broadcast_to(log_w, (*log_w.shape[:-1], batch))
    return jax.scipy.special.logsumexp(log_w.reshape(-1, batch), axis=0)


@partial(jax.jit, static_argnums=0)
def log_weights(pair: NumPyroPair, params: Params, x: jax.Array, keys: jax.Array) -> jax.Array:
    """:func:`log_weight` for each key of ``keys`` (one particle per key, vectorised with
    ``jax.vmap``): shape ``(len(keys), B)``. Jit-compiled, once per pair and shapes."""
    return jax.vmap(partial(log_weight, pair, params, x))(keys)


def log_likelihood(pair: NumPyroPair, params: Params, x: jax.Array, rng_key: jax.Array,
                   num_samples: int, chunk_size: int = 500,
                   return_log_weights: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Per-example IWAE estimate of log p(x) with ``num_samples`` particles, in chunks.

    Chunk ``i`` uses the keys ``jax.random.split(jax.random.fold_in(rng_key, i), chunk)``, all
    chunks have the same size (the last one is computed whole and cut), so the jitted chunk
    function compiles once per shape of ``x``. With ``return_log_weights`` also returns the
    log-weights, shape ``(num_samples, B)`` (for :func:`ppl_dgm.infer.psis.pareto_k`).
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be positive (got {num_samples}, "
                         f"{chunk_size})")
    chunk = min(chunk_size, num_samples)
    chunks = []
    for i, start in enumerate(range(0, num_samples, chunk)):
        keys = jax.random.split(jax.random.fold_in(rng_key, i), chunk)
        chunks.append(log_weights(pair, params, x, keys)[:num_samples - start])
    log_w = jnp.concatenate(chunks, axis=0)
    ll = jax.scipy.special.logsumexp(log_w, axis=0) - math.log(num_samples)
    return (ll, log_w) if return_log_weights else ll
