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
    return {"acc": cluster_acc(labels, clusters),
            "nmi": float(skm.normalized_mutual_info_score(labels, clusters)),
            "ari": float(skm.adjusted_rand_score(labels, clusters))}


def size_entropy(clusters: np.ndarray, n_clusters: Optional[int] = None) -> float:
    """Entropy of the cluster-size distribution divided by log(K): 1 = perfectly balanced,
    0 = everything in one cluster. K = n_clusters (counts empty clusters) or the number used."""
    counts = np.bincount(np.asarray(clusters, dtype=np.int64), minlength=n_clusters or 0)
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
