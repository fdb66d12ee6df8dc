"""Semi-supervised splits: a balanced labelled subset, the unlabelled set and a validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Split:
    """Indices into the training arrays."""

    labelled: np.ndarray
    unlabelled: np.ndarray
    validation: np.ndarray


def balanced_labelled_indices(y: np.ndarray, n_labels: int, seed: int) -> np.ndarray:
    """``n_labels`` indices with the same number of each class, drawn with ``seed``.

    ``n_labels`` must be a multiple of the number of classes, and each class must have enough points.
    """
    classes = np.unique(y)
    if n_labels <= 0 or n_labels % len(classes):
        raise ValueError(
            f"--labels {n_labels}: a balanced split needs a positive multiple of the "
            f"{len(classes)} classes"
        )
    per_class = n_labels // len(classes)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        members = np.flatnonzero(y == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} points, fewer than {per_class} needed")
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def semi_supervised_split(
    y: np.ndarray,
    n_labels: int | None,
    seed: int,
    n_validation: int,
    include_labelled_in_unlabelled: bool = True,
) -> Split:
    """Hold out the last ``n_validation`` training points, then draw a balanced labelled subset.

    ``n_labels=None`` labels every remaining point, ``n_labels=0`` none (a label model trained
    fully unsupervised). With ``include_labelled_in_unlabelled`` (the papers' code), the unlabelled
    set is all non-validation points, the labelled ones included.
    """
    n = len(y)
    if not 0 <= n_validation < n:
        raise ValueError(f"validation size {n_validation} must lie in [0, {n})")
    train = np.arange(n - n_validation)
    validation = np.arange(n - n_validation, n)
    if n_labels is None:
        labelled = train
    elif n_labels == 0:
        labelled = train[:0]
    else:
        labelled = train[balanced_labelled_indices(y[train], n_labels, seed)]
    unlabelled = train if include_labelled_in_unlabelled else np.setdiff1d(train, labelled)
    return Split(labelled, unlabelled, validation)
