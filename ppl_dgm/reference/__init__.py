"""Reference learning curves published by the papers' authors, shipped with the library as data.

``adgm_mnist100_authors.csv``: the training log that the ADGM authors published with their workshop
code (public repository ``ml-lab/auxiliary-deep-generative-models``, file
``output/id_20151209002003_ADGMSSL_784_[500, 500, 500, 500, 500, 500]_200/_logging_2015-12-09-002003.log``):
1000 epochs of ADGM on MNIST with 100 labels, 600 optimiser steps per epoch (every step 100 labelled
and 100 unlabelled images; all 60,000 training images as unlabelled data). Columns: ``epoch``;
``steps``; the test and validation error with one sample of a (percent); the test error with 100
samples of a (percent, every 10th epoch); the training bound as logged. These are the authors'
figures, not results of this library. Read them by steps when comparing with a run of another
epoch size (:func:`adgm_mnist100`, :func:`milestones`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

ADGM_MNIST100_FILE = "adgm_mnist100_authors.csv"
ADGM_MNIST100_SOURCE = ("the ADGM authors' published 1000-epoch training log (ml-lab/"
                        "auxiliary-deep-generative-models, output/id_20151209002003_ADGMSSL_*/"
                        "_logging_2015-12-09-002003.log)")
#: optimiser steps at which a run is set beside the authors' curve (epochs 50, 80, 100, 150, 200)
MILESTONES = (30_000, 48_000, 60_000, 90_000, 120_000)


@dataclass(frozen=True)
class ReferenceCurve:
    """An authors' learning curve by optimiser steps; errors as fractions (NaN where not logged)."""

    steps: np.ndarray
    test_error_a1: np.ndarray
    test_error_a100: np.ndarray
    source: str

    def at(self, steps: int) -> float | None:
        """The 100-sample test error logged at exactly ``steps`` (None if not logged there)."""
        hit = np.flatnonzero((self.steps == steps) & np.isfinite(self.test_error_a100))
        return float(self.test_error_a100[hit[0]]) if len(hit) else None


def adgm_mnist100() -> ReferenceCurve:
    """The ADGM authors' MNIST-100 curve (see the module docstring)."""
    text = resources.files(__name__).joinpath(ADGM_MNIST100_FILE).read_text()
    table = np.genfromtxt(text.splitlines(), delimiter=",", names=True, dtype=float)
    return ReferenceCurve(steps=table["steps"].astype(int),
                          test_error_a1=table["test_error_1sample_pct"] / 100,
                          test_error_a100=table["test_error_100samples_pct"] / 100,
                          source=ADGM_MNIST100_SOURCE)


def milestones(reference: ReferenceCurve, steps: np.ndarray, errors: np.ndarray,
               marks: tuple[int, ...] = MILESTONES) -> list[dict[str, Any]]:
    """For each milestone of ``marks`` that a run has passed: the run's test error at that step
    (the evaluation at exactly that step, else the last one before it, whose step is given), the
    authors' figure there and the gap (run minus authors, fraction). ``steps``/``errors``: the
    run's evaluated records (NaN errors are skipped)."""
    steps, errors = np.asarray(steps, float), np.asarray(errors, float)
    keep = np.isfinite(errors) & np.isfinite(steps)
    steps, errors = steps[keep], errors[keep]
    out = []
    for mark in marks:
        done = np.flatnonzero(steps <= mark)
        if not len(steps) or steps.max() < mark or not len(done):
            continue
        i = done[-1]
        authors = reference.at(mark)
        out.append({"steps": mark, "run_steps": int(steps[i]), "test_error": float(errors[i]),
                    "authors_test_error": authors,
                    "gap": None if authors is None else float(errors[i]) - authors})
    return out
