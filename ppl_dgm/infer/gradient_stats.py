"""Gradient signal-to-noise statistics (backend-neutral, numpy only).

At fixed parameters and a fixed batch, an objective's gradient estimator is drawn N times; per
parameter element the signal-to-noise ratio is |mean| / sd over the draws (Rainforth et al. 2018,
"Tighter variational bounds are not necessarily better"), summarised per group of parameters (the
guide's ``q``, the model's ``p``) by its mean and median over elements, beside the mean and
variance of the loss estimate. ``ppl_dgm.infer.gradients`` (Pyro) and
``ppl_dgm.infer.numpyro_gradients`` (NumPyro) draw the gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The groups of parameters: the guide's (not shared with the model) and the model's.
GROUPS = ("q", "p")


def snr(draws: np.ndarray) -> np.ndarray:
    """Per element |mean| / sd (ddof = 1) of ``draws`` (N, P); NaN where sd is 0 (an element the
    estimator does not move, or moves deterministically)."""
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 2 or draws.shape[0] < 2:
        raise ValueError(f"need draws of shape (N >= 2, P) (got {draws.shape})")
    mean = draws.mean(0)
    sd = draws.std(0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, np.abs(mean) / np.where(sd > 0, sd, 1.0), np.nan)


def summarize(grads: dict[str, np.ndarray], losses: np.ndarray) -> dict[str, Any]:
    """``{"snr_q_mean", "snr_q_median", "snr_p_mean", "snr_p_median", "grad_sd_q", "grad_sd_p",
    "loss_mean", "loss_var", "grad_draws"}`` from gradient draws per group (N, P_group) and the N
    loss estimates. ``grad_sd_*`` is the root-mean-square over elements of the per-element sd."""
    losses = np.asarray(losses, dtype=np.float64)
    out: dict[str, Any] = {"grad_draws": int(len(losses)), "loss_mean": float(losses.mean()),
                           "loss_var": float(losses.var(ddof=1)) if len(losses) > 1 else None}
    for group in GROUPS:
        draws = grads.get(group)
        if draws is None or draws.size == 0:
            out.update({f"snr_{group}_mean": None, f"snr_{group}_median": None,
                        f"grad_sd_{group}": None, f"n_{group}": 0})
            continue
        ratio = snr(draws)
        moving = ratio[np.isfinite(ratio)]
        out[f"snr_{group}_mean"] = float(moving.mean()) if moving.size else None
        out[f"snr_{group}_median"] = float(np.median(moving)) if moving.size else None
        out[f"grad_sd_{group}"] = float(np.sqrt(np.mean(np.asarray(draws, np.float64).var(0,
                                                                                         ddof=1))))
        out[f"n_{group}"] = int(draws.shape[1])
    return out
