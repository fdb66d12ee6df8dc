"""Semi-supervised splits: a balanced labelled subset, the unlabelled set and a validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppl_dgm.errors import UserError


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
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise UserError(
            f"y_train holds one class only ({_class_list(classes)}): a classifier trained on it "
            "would score 100% whatever it learned",
            "give a data set with at least two classes (or train an unsupervised model, e.g. vae)")
    stray = _stray_classes(classes, counts)
    if n_labels <= 0 or n_labels % len(classes):
        hint = f"e.g. --labels {len(classes) * max(1, round(max(n_labels, 1) / len(classes)))}"
        if stray:
            raise UserError(
                f"y_train holds {len(classes)} classes, but {stray}: a stray label? (--labels "
                f"{n_labels} is not a multiple of {len(classes)})", "check the labels of the data "
                f"file (classes 0..K-1, each with its share of the points); if they are right, "
                f"{hint}")
        raise UserError(
            f"--labels {n_labels}: a balanced split needs a positive multiple of the "
            f"{len(classes)} classes", hint)
    per_class = n_labels // len(classes)
    rng = np.random.default_rng(seed)
    chosen = []
    for c, count in zip(classes, counts, strict=True):
        members = np.flatnonzero(y == c)
        if count < per_class:
            most = len(classes) * int(counts.min())
            where = f" ({stray}: a stray label? check the data file)" if stray else ""
            raise UserError(f"--labels {n_labels}: class {c} of y_train has {count} "
                            f"point{'s' if count != 1 else ''}, fewer "
                            f"than the {per_class} per class needed{where}",
                            f"give --labels {most} or fewer (a multiple of {len(classes)})"
                            if most else "give every class training points")
        chosen.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def _class_list(classes: np.ndarray) -> str:
    shown = ", ".join(str(int(c)) for c in classes[:5])
    return f"class {shown}" if len(classes) == 1 else f"classes {shown}"


def _stray_classes(classes: np.ndarray, counts: np.ndarray) -> str:
    """The classes with fewer than a tenth of the median class's points (a label entered by
    mistake, e.g. one 10 among the digits 0..9), described for an error; "" when none."""
    median = float(np.median(counts))
    stray = [(int(c), int(n)) for c, n in zip(classes, counts, strict=True) if n < median / 10]
    if not stray:
        return ""
    shown = ", ".join(f"class {c} has {n} point{'s' if n != 1 else ''}" for c, n in stray[:3])
    more = f" (and {len(stray) - 3} more classes)" if len(stray) > 3 else ""
    return f"{shown}{more} where the median class has {median:.0f}"


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
