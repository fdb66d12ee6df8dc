"""The scale hooks the Pyro programs put around their sample sites (model and guide alike).

- :func:`kl_scale`: the annealed KL (warm-up), ``beta`` on every latent site; the schedule itself
  (``beta`` per optimiser step) is backend-neutral, :class:`ppl_dgm.infer.annealing.LinearWarmup`;
- :func:`labelled_scale`: CaGeM's weight of a labelled call's generative terms
  (``labelled_weighting="data_points"``, ``models/cagem.py``).

The NumPyro twins: :mod:`ppl_dgm.infer.numpyro_site_scales`.
"""

from __future__ import annotations

import contextlib

import torch
from pyro import poutine


def kl_scale(beta: float) -> contextlib.AbstractContextManager:
    """The annealed-KL hook: ``poutine.scale(scale=beta)`` around a latent site.

    Warm-up starts at beta = 0, which ``poutine.scale`` rejects; there the latent log-densities get
    weight zero through ``poutine.mask(mask=False)``, which is the same objective.
    """
    if beta == 1.0:
        return contextlib.nullcontext()
    if beta > 0:
        return poutine.scale(scale=beta)
    if beta == 0:
        return poutine.mask(mask=False)
    raise ValueError(f"beta must be >= 0 (got {beta})")


def labelled_scale(weight: float, y: torch.Tensor | None) -> contextlib.AbstractContextManager:
    """``poutine.scale(scale=weight)`` around the generative terms of a labelled call (``y`` given
    and ``weight`` != 1: ``labelled_weighting="data_points"``), else nothing."""
    if y is None or weight == 1.0:
        return contextlib.nullcontext()
    return poutine.scale(scale=weight)
