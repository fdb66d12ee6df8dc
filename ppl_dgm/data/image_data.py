"""The in-memory form of every data set: :class:`ImageData` (backend-neutral numpy arrays).

Its own module, below both :mod:`ppl_dgm.data` (the loaders by name) and the loaders that build
one (:mod:`ppl_dgm.data.sequence`), so that neither has to import the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageData:
    """Images in [0, 1] (float32, shape ``(N, *image_shape)``) with integer labels.

    ``y`` has shape ``(N,)`` for single labels or ``(N, T)`` for sequences of T labels.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    #: the file (or folder of files) actually read, when known: what a run should record as its
    #: data, rather than the ``--data-dir`` it was given
    source: str | None = None

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def x_dim(self) -> int:
        return int(np.prod(self.image_shape))
