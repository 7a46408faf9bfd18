"""Bounded choices for the report: which points go on the map, which members get thumbnails.

Everything here is O(N) time and O(N + K * D) memory beyond the inputs, so a report over a
million rows costs the same page size as one over a thousand.
"""
from __future__ import annotations

import numpy as np

from raycluster.data.store import unit_rows


def bounded_sample(n: int, max_items: int, seed: int = 0) -> np.ndarray:
    """Sorted int64 indices of min(n, max_items) rows drawn uniformly without replacement."""
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    if n <= max_items:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_items, replace=False)).astype(np.int64)


def cluster_centroids(vectors: np.ndarray, cluster: np.ndarray, n_clusters: int,
                      chunk: int = 65536) -> np.ndarray:
    """(K, D) float32 unit-norm mean direction of each cluster's unit-norm vectors (zeros if empty)."""
    sums = np.zeros((n_clusters, vectors.shape[1]), dtype=np.float64)
    for start in range(0, len(vectors), chunk):
        block = unit_rows(vectors[start:start + chunk])
        np.add.at(sums, cluster[start:start + chunk], block)
    return unit_rows(sums).astype(np.float32)


def centrality(vectors: np.ndarray, cluster: np.ndarray, n_clusters: int, chunk: int = 65536) -> np.ndarray:
    """(N,) float32 cosine similarity of each vector to its cluster's centroid."""
    centroids = cluster_centroids(vectors, cluster, n_clusters, chunk)
    out = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), chunk):
        block = unit_rows(vectors[start:start + chunk])
        out[start:start + chunk] = np.einsum("nd,nd->n", block, centroids[cluster[start:start + chunk]])
    return out


def representative_members(vectors: np.ndarray, cluster: np.ndarray, confidence: np.ndarray, n_clusters: int,
                           central: int = 8, uncertain: int = 4) -> dict[int, dict[str, np.ndarray]]:
    """Per cluster: the `central` members closest to its centroid (most central first) and the
    `uncertain` least confident others (least confident first).

    vectors (N, D) float; cluster (N,) int in [0, K); confidence (N,) float.
    Returns {cluster_id: {"central": int64 indices, "uncertain": int64 indices}} for every
    cluster id in [0, K), empty arrays for empty clusters. At most K * (central + uncertain) rows.
    """
    cluster = np.asarray(cluster, dtype=np.int64)
    score = centrality(vectors, cluster, n_clusters)
    by_centrality = np.lexsort((-score, cluster))        # grouped by cluster, most central first
    by_confidence = np.lexsort((confidence, cluster))    # grouped by cluster, least confident first
    bounds = np.searchsorted(cluster[by_centrality], np.arange(n_clusters + 1))
    members = {}
    for cid in range(n_clusters):
        lo, hi = bounds[cid], bounds[cid + 1]
        top = by_centrality[lo:min(hi, lo + central)]
        # the least confident members that are not already shown as central
        low = by_confidence[lo:hi]
        low = low[~np.isin(low, top)][:uncertain]
        members[cid] = {"central": top.astype(np.int64), "uncertain": low.astype(np.int64)}
    return members


