"""The Pareto-smoothed importance sampling diagnostic, backend-neutral (numpy in, numpy out).

Both backends' importance-weighted evaluations (``ppl_dgm.infer.importance`` for Pyro,
``ppl_dgm.infer.numpyro_importance`` for NumPyro) report it; importing this module imports neither
torch nor JAX.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike


def pareto_k(log_w: ArrayLike) -> np.ndarray:
    """Pareto-smoothed importance sampling k-hat per example (``log_w`` of shape (K, B)).

    ``log_w`` is anything ``numpy.asarray`` reads (a numpy or a JAX array, a CPU torch tensor).
    k-hat > 0.7 flags an unreliable importance-sampling estimate (Vehtari et al.).
    """
    import arviz as az

    log_w = np.asarray(log_w, dtype=np.float64)
    if log_w.ndim != 2:
        raise ValueError(f"pareto_k expects log-weights of shape (K, B), got {log_w.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, k = az.psislw(log_w.T)
    return np.asarray(k)
