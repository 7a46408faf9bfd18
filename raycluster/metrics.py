"""Clustering metrics: ACC (Hungarian matching), NMI, ARI, and label-free diagnostics.

All functions take integer arrays of shape (N,); labels and clusters need not share a range.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm


def contingency(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """(n_clusters, n_classes) int64 counts; rows/cols indexed by the sorted unique values."""
    return skm.cluster.contingency_matrix(labels, clusters).T


def cluster_acc(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Accuracy under the best one-to-one cluster -> class mapping (Hungarian; scipy)."""
    table = contingency(labels, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(labels))


def supervised_metrics(labels: np.ndarray, clusters: np.ndarray) -> dict:
    """{"acc", "nmi", "ari"} of a clustering against ground-truth labels."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape:
        raise ValueError(f"labels {labels.shape} and clusters {clusters.shape} differ in shape")
    return table_metrics(contingency(labels, clusters))


def table_metrics(table: np.ndarray) -> dict:
    """{"acc", "nmi", "ari"} from a (clusters, classes) count table alone, so a clustering of any
    size is scored from counts summed over streamed batches. NMI uses the arithmetic mean of the
    two entropies and ARI the pair-counting formula, as scikit-learn's scores do."""
    table = np.asarray(table, dtype=np.float64)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    n = table.sum()
    rows, cols = linear_sum_assignment(table, maximize=True)
    acc = float(table[rows, cols].sum() / n)
    a, b = table.sum(1), table.sum(0)
    nonzero = table > 0
    mutual = float((table[nonzero] / n * np.log(table[nonzero] * n / np.outer(a, b)[nonzero])).sum())
    h_a, h_b = -(a / n * np.log(a / n)).sum(), -(b / n * np.log(b / n)).sum()
    nmi = 1.0 if h_a == h_b == 0 else (mutual / ((h_a + h_b) / 2) if h_a + h_b > 0 else 0.0)
    pairs = lambda x: (x * (x - 1) / 2).sum()   # noqa: E731
    index, expected_a, expected_b = pairs(table), pairs(a), pairs(b)
    expected = expected_a * expected_b / max(n * (n - 1) / 2, 1)
    top = (expected_a + expected_b) / 2
    ari = 1.0 if top == expected else float((index - expected) / (top - expected))
    return {"acc": acc, "nmi": float(max(0.0, nmi)), "ari": ari}


def size_entropy(clusters: np.ndarray, n_clusters: Optional[int] = None) -> float:
    """Entropy of the cluster-size distribution divided by log(K): 1 = perfectly balanced,
    0 = everything in one cluster. K = n_clusters (counts empty clusters) or the number used."""
    return count_entropy(np.bincount(np.asarray(clusters, dtype=np.int64), minlength=n_clusters or 0), n_clusters)


def count_entropy(counts: np.ndarray, n_clusters: Optional[int] = None) -> float:
    """`size_entropy` from (K,) cluster sizes."""
    counts = np.asarray(counts)
    k = n_clusters or int((counts > 0).sum())
    if k <= 1:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(k))


def silhouette_sample(vectors: np.ndarray, clusters: np.ndarray, sample_size: int = 5000,
                      seed: int = 0) -> Optional[float]:
    """Silhouette (cosine) on a random sample of at most `sample_size` points; None if < 2 clusters."""
    clusters = np.asarray(clusters)
    if len(np.unique(clusters)) < 2:
        return None
    n = min(sample_size, len(clusters))
    return float(skm.silhouette_score(vectors, clusters, metric="cosine", sample_size=n, random_state=seed))


def label_free_metrics(vectors: np.ndarray, clusters: np.ndarray, n_clusters: int, seed: int = 0) -> dict:
    """Diagnostics that need no labels: {"size_entropy", "clusters_used", "silhouette"}."""
    return {"size_entropy": size_entropy(clusters, n_clusters),
            "clusters_used": int(len(np.unique(clusters))),
            "silhouette": silhouette_sample(vectors, clusters, seed=seed)}
