"""Diagnostics of the auxiliary variable a of ADGM and SDGM (backend-neutral: numpy only).

What the records call them, and what they are (recorded in ``history.nc`` at every evaluation):

- ``a_std``: the mean standard deviation of q(a | x) over the held-out images and a's dimensions.
- ``mutual_info_y_a``: the mutual information between y and a given x under the guide,
  I(y; a | x) = H[E_a q(y | a, x)] - E_a H[q(y | a, x)], in nats, averaged over the held-out images
  (the validation slice, or the test images when none is held out), each expectation over
  :data:`DIAGNOSTIC_SAMPLES` draws a ~ q(a | x). It is 0 when the classifier ignores a, and at most
  log K. This, not the a-term of the ELBO, says whether q(y | a, x) uses a: for the ADGM, whose
  p(a | x, y, z) follows y and z, E_q[log q(a|x) - log p(a|x,y,z)] =
  E[KL(q(a|x,y,z) || p(a|x,y,z))] - I_q(a; y, z | x), which is no KL and may sit near zero or
  below it while a is in use.
- ``test_error_a1`` and ``test_error_a100``: the test error of argmax_y q(y | a, x) with one draw of
  a, and of argmax_y (1/100) sum_s q(y | a_s, x) (the authors' test figure).

A trainer passes the per-sample class probabilities of each evaluation batch to
:class:`AuxiliaryTally` and reads :meth:`AuxiliaryTally.figures`.
"""

from __future__ import annotations

import numpy as np

DIAGNOSTIC_SAMPLES = 100
RECORDED = ("a_std", "mutual_info_y_a", "test_error_a1", f"test_error_a{DIAGNOSTIC_SAMPLES}")


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in nats of the categorical distributions on the last axis (0 log 0 = 0)."""
    p = np.asarray(probs, np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(-1)


def mutual_information(probs: np.ndarray) -> np.ndarray:
    """I(y; a | x) per point from ``probs`` of shape ``(S, N, K)``: q(y | a_s, x_n) for S draws
    a_s ~ q(a | x_n). Returns ``(N,)``: H[mean_s q(y|a_s,x)] - mean_s H[q(y|a_s,x)] (>= 0)."""
    probs = np.asarray(probs, np.float64)
    value = entropy(probs.mean(0)) - entropy(probs).mean(0)
    return np.maximum(value, 0.0)  # concavity of H: >= 0 up to rounding


class AuxiliaryTally:
    """Sums over evaluation batches of the figures above.

    ``add(probs, labels, scale)``: ``probs`` ``(S, B, K)`` (the batch's class probabilities for S
    draws of a; the first draw gives the one-sample prediction), ``labels`` ``(B,)`` or ``None``
    (no error counted), ``scale`` ``(B, a_dim)`` (q(a | x)'s standard deviations) or ``None``.
    """

    def __init__(self) -> None:
        self.n = self.n_scale = 0
        self.wrong_1 = self.wrong_s = 0
        self.info = self.std = 0.0
        self.samples: int | None = None
        self.labelled = False

    def add(self, probs: np.ndarray, labels: np.ndarray | None = None,
            scale: np.ndarray | None = None) -> None:
        probs = np.asarray(probs, np.float64)
        if probs.ndim != 3:
            raise ValueError(f"probs must have shape (S, B, K), got {probs.shape}")
        self.samples = probs.shape[0]
        self.n += probs.shape[1]
        self.info += float(mutual_information(probs).sum())
        if labels is not None:
            labels = np.asarray(labels)
            self.labelled = True
            self.wrong_1 += int((probs[0].argmax(-1) != labels).sum())
            self.wrong_s += int((probs.mean(0).argmax(-1) != labels).sum())
        if scale is not None:
            scale = np.asarray(scale, np.float64)
            self.std += float(scale.mean(-1).sum())
            self.n_scale += scale.shape[0]

    def figures(self) -> dict[str, float]:
        """``mutual_info_y_a``, ``a_std`` (when scales were added), ``test_error_a1`` and
        ``test_error_a{S}`` (when labels were added)."""
        out = {"mutual_info_y_a": self.info / max(self.n, 1)}
        if self.n_scale:
            out["a_std"] = self.std / self.n_scale
        if self.labelled:
            out["test_error_a1"] = self.wrong_1 / self.n
            out[f"test_error_a{self.samples}"] = self.wrong_s / self.n
        return out
