"""Distributed Lloyd passes: k-means refined over a whole store while the caller holds (K, D).

One pass is a map over the store's batches (`StoreRows.map`: in-process for small stores, Ray
Data tasks otherwise): each batch returns, per centroid, the sum and count of its nearest rows
and their squared distances; the caller adds them up and divides. A pass costs one read of the
store and one (n, K) nearest-centroid search per batch.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def partial_sums(keys, labels, vectors: np.ndarray, centroids: np.ndarray, spherical: bool = False) -> dict:
    """One batch's contribution. vectors (n, D) float32, centroids (K, D) float32 ->
    {"sums" (K, D) float64, "counts" (K,) int64, "inertia" (K,) float64 summed squared distances}
    (every column has K rows, as Ray Data needs)."""
    import faiss

    k = len(centroids)
    index = faiss.IndexFlatIP(centroids.shape[1]) if spherical else faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    scores, nearest = index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    nearest = nearest[:, 0]
    distances = 2.0 - 2.0 * scores[:, 0] if spherical else scores[:, 0]
    from scipy.sparse import csr_matrix

    # (K, n) one-hot membership times (n, D): a sparse product, much faster than np.add.at
    members = csr_matrix((np.ones(len(nearest)), (nearest, np.arange(len(nearest)))), shape=(k, len(nearest)))
    sums = np.asarray(members @ vectors.astype(np.float64))
    return {"sums": sums, "counts": np.bincount(nearest, minlength=k).astype(np.int64),
            "inertia": np.bincount(nearest, weights=distances, minlength=k)}


def lloyd_pass(rows, centroids: np.ndarray, spherical: bool = False) -> tuple[np.ndarray, float, np.ndarray]:
    """One Lloyd iteration over every row of `rows` (a StoreRows).
    Returns (new centroids (K, D) float32, inertia of the *given* centroids, counts (K,)).
    An empty cluster keeps its centroid."""
    sums = np.zeros(centroids.shape, np.float64)
    counts = np.zeros(len(centroids), np.int64)
    inertia = 0.0
    for part in rows.map(partial_sums, {"centroids": centroids, "spherical": spherical}):
        k = len(centroids)   # Ray Data may concatenate several batches' outputs: fold every K rows
        sums += np.asarray(part["sums"]).reshape(-1, k, centroids.shape[1]).sum(0)
        counts += np.asarray(part["counts"]).reshape(-1, k).sum(0)
        inertia += float(np.asarray(part["inertia"]).sum())
    updated = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centroids)
    if spherical:
        updated /= np.maximum(np.linalg.norm(updated, axis=1, keepdims=True), 1e-12)
    return updated.astype(np.float32), inertia, counts


def refine(rows, centroids: np.ndarray, passes: int, spherical: bool = False, tolerance: float = 1e-4) -> tuple:
    """Up to `passes` Lloyd passes from `centroids`; stops early when the objective improves by
    less than `tolerance` (relative). Returns (centroids, inertia of the returned centroids or
    None when no pass ran after the last update, passes run)."""
    previous = None
    for done in range(1, passes + 1):
        updated, inertia, _ = lloyd_pass(rows, centroids, spherical)
        log.info("k-means refinement pass %d/%d: objective %.6g", done, passes, inertia)
        if previous is not None and previous - inertia <= tolerance * abs(previous):
            return centroids, inertia, done
        previous, centroids = inertia, updated
    return centroids, None, passes
