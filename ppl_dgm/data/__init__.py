"""Data sets as numpy arrays (backend-neutral): loading, semi-supervised splits, binarisation.

``load_dataset`` accepts ``"digits"`` (scikit-learn's bundled 8x8 digits, no download), ``"mnist"``,
``"mnist-sequence"`` (cluttered MNIST digit sequences, built once and cached) or a path to any
``.npz`` with the MNIST key layout (``x_train y_train x_test y_test``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppl_dgm.data.mnist import DataNotFoundError, load_mnist, read_npz
from ppl_dgm.data.splits import Split, balanced_labelled_indices, semi_supervised_split

__all__ = [
    "DataNotFoundError",
    "ImageData",
    "Split",
    "balanced_labelled_indices",
    "binarize_static",
    "load_dataset",
    "load_mnist",
    "semi_supervised_split",
]

DATASETS = ("digits", "mnist", "mnist-sequence")


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

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def x_dim(self) -> int:
        return int(np.prod(self.image_shape))


def _from_arrays(name: str, arrays: dict[str, np.ndarray]) -> ImageData:
    def scale(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype == np.uint8:
            return x.astype(np.float32) / 255.0
        x = x.astype(np.float32)
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"{name}: float images must lie in [0, 1] (got {x.min()}..{x.max()})")
        return x

    y_train = np.asarray(arrays["y_train"]).astype(np.int64)
    y_test = np.asarray(arrays["y_test"]).astype(np.int64)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    return ImageData(name, scale(arrays["x_train"]), y_train, scale(arrays["x_test"]), y_test,
                     n_classes)


def load_digits(test_size: int = 497, seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 digits (1,797 images) in [0, 1]; a fixed seeded train/test split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:test_size], order[test_size:]
    return ImageData("digits", x[train], y[train], x[test], y[test], 10)


def load_dataset(
    name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, **options
) -> ImageData:
    """Load a data set by name (``digits``, ``mnist``, ``mnist-sequence``) or ``.npz`` path.

    ``options`` are passed to the sequence generator for ``mnist-sequence``.
    """
    name = str(name_or_path)
    if name == "digits":
        return load_digits()
    if name == "mnist":
        return _from_arrays("mnist", load_mnist(data_dir))
    if name == "mnist-sequence":
        from ppl_dgm.data.sequence import load_mnist_sequence

        return load_mnist_sequence(data_dir=data_dir, **options)
    path = Path(name)
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataNotFoundError(f"data set file {path} does not exist")
        return _from_arrays(path.stem, read_npz(path))
    raise ValueError(f"unknown data set {name!r}: use one of {DATASETS} or a path to an .npz file")


def binarize_static(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A fixed Bernoulli sample of intensities in [0, 1] (the test set for log-likelihoods)."""
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)
