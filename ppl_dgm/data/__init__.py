"""Data sets as numpy arrays (backend-neutral): loading, semi-supervised splits, binarisation.

``load_dataset`` accepts ``"digits"`` (scikit-learn's bundled 8x8 digits, no download), ``"mnist"``,
``"mnist-sequence"`` (cluttered MNIST digit sequences, built once and cached), the papers' other
sets ``"svhn"``, ``"norb"`` (small NORB) and ``"omniglot"`` (read from their official files, never
downloaded: :mod:`ppl_dgm.data.papers_sets`) or a path to any ``.npz`` with the MNIST key layout
(``x_train y_train x_test y_test``).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np

from ppl_dgm.data.image_data import ImageData
from ppl_dgm.data.mnist import DataNotFoundError, load_mnist, read_npz
from ppl_dgm.data.splits import Split, balanced_labelled_indices, semi_supervised_split
from ppl_dgm.errors import UserError

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

DATASETS = ("digits", "mnist", "mnist-sequence", "svhn", "norb", "omniglot")


def check_labels(name: str, y_train: np.ndarray, y_test: np.ndarray) -> int:
    """Labels must be the integers 0..K-1 (every class present in the training labels); returns K.

    Raises :class:`~ppl_dgm.errors.UserError` naming ``name`` and the fix otherwise.
    """
    for split, y in (("y_train", y_train), ("y_test", y_test)):
        if y.dtype.kind not in "iub":
            if y.dtype.kind != "f":
                raise UserError(f"{name}: {split} has {y.dtype} values, not class numbers",
                                "store the labels as integers 0..K-1")
            if not np.isfinite(y).all():
                raise UserError(f"{name}: {split} holds NaN or infinite labels",
                                "store the labels as integers 0..K-1")
            if not np.array_equal(y, np.round(y)):
                bad = y[y != np.round(y)].ravel()[0].item()
                raise UserError(f"{name}: {split} holds non-integer labels (e.g. {bad!r})",
                                "store the labels as integers 0..K-1")
        if y.ndim not in (1, 2):
            raise UserError(f"{name}: {split} has shape {y.shape}",
                            "labels are (N,), or (N, T) for sequences of T labels")
        if len(y) and y.min() < 0:
            raise UserError(f"{name}: {split} holds negative labels (min {y.min()})",
                            "number the classes 0..K-1")
    classes = np.unique(y_train)
    k = int(classes[-1]) + 1
    if len(classes) != k:
        missing = sorted(set(range(k)) - set(classes.astype(int).tolist()))[:5]
        raise UserError(
            f"{name}: y_train's classes are not 0..{k - 1} (found {len(classes)} classes "
            f"{int(classes[0])}..{int(classes[-1])}, missing {missing})",
            "number the classes 0..K-1 without gaps (e.g. subtract 1 from labels 1..10)")
    if len(y_test) and y_test.max() >= k:
        raise UserError(f"{name}: y_test holds class {int(y_test.max())}, absent from y_train "
                        f"(classes 0..{k - 1})", "use the same classes in both splits")
    return k


def check_images(name: str, x_train: np.ndarray, x_test: np.ndarray) -> None:
    """Non-empty numeric images of the same shape in both splits, finite, uint8 or in [0, 1]."""
    for split, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype.kind not in "iufb":
            raise UserError(f"{name}: {split} has {x.dtype} values", "store images as uint8 or "
                            "float32 in [0, 1]")
        if x.ndim < 2 or x.size == 0 or len(x) == 0:
            raise UserError(f"{name}: {split} is empty or not a stack of images (shape {x.shape})",
                            "store (N, H, W) or (N, D) arrays with N >= 1")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise UserError(f"{name}: {split} holds NaN or infinite values",
                            "replace them (e.g. numpy.nan_to_num) before saving")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{name}: x_train images have shape {x_train.shape[1:]} but x_test "
                        f"images {x_test.shape[1:]}", "give both splits images of one shape")


def _from_arrays(name: str, arrays: dict[str, np.ndarray], source: str | None = None) -> ImageData:
    """Checked arrays -> :class:`ImageData`; errors name ``source`` (the file), else ``name``."""
    label, name = name, source or name

    def scale(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype == np.uint8:
            return x.astype(np.float32) / 255.0
        x = x.astype(np.float32)
        if x.min() < 0 or x.max() > 1:
            raise UserError(f"{name}: images must be uint8 or lie in [0, 1] (got {x.min()}..{x.max()})",
                            "divide 0..255 intensities by 255")
        return x

    x_train, x_test = np.asarray(arrays["x_train"]), np.asarray(arrays["x_test"])
    y_train, y_test = np.asarray(arrays["y_train"]), np.asarray(arrays["y_test"])
    check_images(name, x_train, x_test)
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if y.ndim == 0 or len(x) != len(y):
            raise UserError(f"{name}: x_{split} has {len(x)} rows but y_{split} has "
                            f"{len(y) if y.ndim else 0}", "give one label (row) per image")
    n_classes = check_labels(name, y_train, y_test)
    return ImageData(label, scale(x_train), y_train.astype(np.int64), scale(x_test),
                     y_test.astype(np.int64), n_classes)


def load_digits(test_size: int = 497, seed: int = 0) -> ImageData:
    """scikit-learn's 8x8 digits (1,797 images) in [0, 1]; a fixed seeded train/test split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    test, train = order[:test_size], order[test_size:]
    return ImageData("digits", x[train], y[train], x[test], y[test], 10)


def dataset_options(name: str) -> dict[str, object]:
    """The options (``--data-option KEY=VALUE``) a data set takes, with their defaults."""
    if name == "norb":
        from ppl_dgm.data.papers_sets import load_norb as loader
    elif name == "mnist-sequence":
        from ppl_dgm.data.sequence import load_mnist_sequence as loader
    else:
        return {}
    return {k: p.default for k, p in inspect.signature(loader).parameters.items()
            if k != "data_dir"}


def check_dataset_options(name: str, options: dict[str, object]) -> None:
    """Raise :class:`~ppl_dgm.errors.UserError` for an option the data set does not take or a value
    of the wrong kind (sizes and counts are integers, ``seed`` >= 0, ``cache`` true/false)."""
    known = dataset_options(str(name))
    for key, value in options.items():
        if key not in known:
            hint = (f"{name} takes {sorted(known)}" if known
                    else f"the data set {name!r} takes no --data-option")
            raise UserError(f"unknown --data-option {key!r}", hint)
        default = known[key]
        where = f"--data-option {key}={value}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"{where}: must be true or false")
        elif isinstance(default, int):
            low = 0 if key in ("n_clutter", "seed") else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"{where}: must be an integer >= {low}", f"e.g. {key}={default}")


def load_dataset(
    name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, **options
) -> ImageData:
    """Load a data set by name (``digits``, ``mnist``, ``mnist-sequence``, ``svhn``, ``norb``,
    ``omniglot``) or ``.npz`` path.

    ``options`` are passed to the sequence generator for ``mnist-sequence`` and to the small-NORB
    reader for ``norb`` (see :func:`check_dataset_options`).
    """
    name = str(name_or_path)
    check_dataset_options(name, options)
    if name == "digits":
        return load_digits()
    if name == "mnist":
        from ppl_dgm.data.mnist import find_mnist

        data = _from_arrays("mnist", load_mnist(data_dir))
        found = find_mnist(data_dir)  # after load_mnist: a download has put it in the cache
        data.source = str(found.resolve()) if found is not None else None
        return data
    if name == "mnist-sequence":
        from ppl_dgm.data.sequence import load_mnist_sequence

        return load_mnist_sequence(data_dir=data_dir, **options)
    if name in ("svhn", "norb", "omniglot"):  # the papers' other data sets (official files)
        from ppl_dgm.data.papers_sets import LOADERS

        return _from_arrays(name, LOADERS[name](data_dir, **options))
    path = Path(name)
    if path.suffix == ".npz":
        if not path.is_file():
            raise DataNotFoundError(f"data set file {path} does not exist; check the --dataset path")
        data = _from_arrays(path.stem, read_npz(path), source=str(path))
        data.source = str(path.resolve())
        return data
    raise ValueError(f"unknown data set {name!r}: use one of {DATASETS} or a path to an .npz file")


def binarize_static(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A fixed Bernoulli sample of intensities in [0, 1] (the test set for log-likelihoods)."""
    rng = np.random.default_rng(seed)
    return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)
