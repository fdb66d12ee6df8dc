"""Clustering accuracy of an unsupervised label model (backend-neutral: numpy and scipy).

A model trained without labels (``--labels 0``) assigns each point to one of K clusters; its
clustering accuracy is the fraction of points whose cluster maps to their class under the best
one-to-one assignment of clusters to classes (the Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``, on the K x C contingency table). With K > C, the points of
the K - C unassigned clusters count as errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment


def contingency(clusters: np.ndarray, labels: np.ndarray, n_clusters: int,
                n_classes: int) -> np.ndarray:
    """Counts ``(n_clusters, n_classes)``: entry (k, c) is the number of points of class c in k."""
    clusters, labels = np.asarray(clusters, np.int64), np.asarray(labels, np.int64)
    if clusters.shape != labels.shape:
        raise ValueError(f"clusters {clusters.shape} and labels {labels.shape} differ in shape")
    table = np.zeros((n_clusters, n_classes), np.int64)
    np.add.at(table, (clusters, labels), 1)
    return table


def clustering_record(clusters: np.ndarray, labels: np.ndarray, n_clusters: int,
                      n_classes: int) -> dict[str, Any]:
    """``clustering_accuracy``, ``cluster_sizes`` (points per cluster), ``n_clusters`` and
    ``cluster_to_class`` (the best assignment; -1 for a cluster left without a class)."""
    table = contingency(clusters, labels, n_clusters, n_classes)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = np.full(n_clusters, -1, np.int64)
    mapping[rows] = cols
    return {
        "clustering_accuracy": float(table[rows, cols].sum() / max(table.sum(), 1)),
        "cluster_sizes": table.sum(1).tolist(),
        "n_clusters": int(n_clusters),
        "cluster_to_class": mapping.tolist(),
    }
