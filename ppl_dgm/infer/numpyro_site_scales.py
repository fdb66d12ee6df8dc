"""The scale hooks the NumPyro programs put around their sample sites (model and guide alike).

- :func:`kl_scale`: the annealed KL (warm-up), ``beta`` on every latent site; the schedule itself
  (``beta`` per optimiser step) is backend-neutral, :class:`ppl_dgm.infer.annealing.LinearWarmup`;
- :func:`labelled_scale`: CaGeM's weight of a labelled call's generative terms
  (``labelled_weighting="data_points"``, ``models/cagem.py``).

The Pyro twins: :mod:`ppl_dgm.infer.site_scales`. Importing this module never imports torch.
"""

from __future__ import annotations

import contextlib

import jax
from numpyro import handlers


def kl_scale(beta: float | jax.Array) -> contextlib.AbstractContextManager:
    """The annealed-KL hook: ``handlers.scale(scale=beta)`` around a latent site.

    ``handlers.scale`` refuses a concrete beta of 0 (warm-up starts there; under ``jit`` beta is a
    tracer and passes): a Python 0 masks the site instead, which is the same objective. A Python 1
    adds no handler (so the sites carry no scale at evaluation).
    """
    if isinstance(beta, (int, float)):
        if beta == 1:
            return contextlib.nullcontext()
        if beta == 0:
            return handlers.mask(mask=False)
        if beta < 0:
            raise ValueError(f"beta must be >= 0 (got {beta})")
    return handlers.scale(scale=beta)


def labelled_scale(weight: float, y: jax.Array | None) -> contextlib.AbstractContextManager:
    """``handlers.scale(scale=weight)`` around the generative terms of a labelled call (``y`` given
    and ``weight`` != 1: ``labelled_weighting="data_points"``, ``models/cagem.py``), else nothing."""
    if y is None or weight == 1.0:
        return contextlib.nullcontext()
    return handlers.scale(scale=weight)
