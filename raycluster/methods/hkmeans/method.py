"""Hierarchical k-means (Vo et al., TMLR 2024, "Automatic Data Curation for Self-Supervised
Learning"): level 1 clusters the embeddings, each higher level clusters the centroids of the
level below. `method=hkmeans`, `levels: [10000, 1000, 100]` (level 1 first, decreasing).

Choices, and why:
- Higher levels cluster the lower level's centroids *unweighted* (`weighted: false`), as Vo et
  al. do: a dense region of near-duplicates then counts once per centroid, not once per image,
  so the top levels spread over concepts rather than over mass - what balanced sampling
  (`jobs/curate.py`) needs. `weighted: true` weights each centroid by its cluster size, which
  approximates flat k-means at that level's K more closely.
- Level 1 at large K without N x K cost (`split_above`): a coarse k-means with
  K0 = round(sqrt(K)) clusters, then every coarse cluster split into a share of K proportional to
  its size, each split its own k-means (Ray tasks when Ray is running; the route unicom took to
  1M clusters). A Lloyd iteration then costs N x (K0 + K / K0) distance evaluations instead of
  N x K: ~50x fewer at K = 10,000. Assignment stays exact (nearest of all K level-1 centroids,
  one BLAS search per batch), so rows go to the centroid the k-means objective says.
- `resampling_steps` > 0: Vo et al.'s refinement: re-fit each level's centroids on the
  `points_per_cluster` points nearest each current centroid, which moves centroids off the
  densest modes towards a uniform cover of the data.
"""
from __future__ import annotations

import logging
import math
from typing import Optional, Sequence

import numpy as np

from raycluster.methods.base import ClusteringMethod

log = logging.getLogger(__name__)


PLUSPLUS_BUDGET = 5e8   # n x k below which k-means++ seeds the centroids (it costs one Lloyd iteration, in numpy)


def faiss_kmeans(vectors: np.ndarray, k: int, seed: int, niter: int, weights: Optional[np.ndarray] = None,
                 gpu: bool = False) -> tuple[np.ndarray, float]:
    """(n, D) float32 -> ((k, D) float32 centroids, objective); k <= n. FAISS trains on every row
    given (the caller samples). Seeds: k-means++ (scikit-learn) when n x k is small enough,
    FAISS's random rows otherwise (the coarse and split k-means keep n x k small)."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    weights = None if weights is None else np.ascontiguousarray(weights, dtype=np.float32)
    init = None
    if len(vectors) * k <= PLUSPLUS_BUDGET:
        from sklearn.cluster import kmeans_plusplus

        init, _ = kmeans_plusplus(vectors, k, sample_weight=weights, random_state=seed)
    kmeans = faiss.Kmeans(vectors.shape[1], k, niter=niter, seed=seed, gpu=gpu, verbose=False,
                          max_points_per_centroid=max(256, len(vectors)), min_points_per_centroid=1)
    kmeans.train(vectors, weights=weights,
                 init_centroids=None if init is None else np.ascontiguousarray(init, dtype=np.float32))
    return kmeans.centroids.copy(), float(kmeans.obj[-1]) if len(kmeans.obj) else 0.0


def nearest(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, D), (k, D) -> nearest centroid (n,) int64 and its squared distance (n,) float32."""
    import faiss

    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    distances, ids = index.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return ids[:, 0].astype(np.int64), distances[:, 0]


def shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split `total` clusters over groups proportionally to `sizes` (largest remainder), each
    group at least 1 and at most its size. sizes (G,) int -> (G,) int summing to `total`."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if total > sizes.sum():
        raise ValueError(f"{total} clusters need at least as many points, got {sizes.sum()}")
    raw = sizes / sizes.sum() * total
    out = np.clip(np.floor(raw).astype(np.int64), 1, sizes)
    while out.sum() < total:   # hand out the rest by largest remainder among groups with room
        room = out < sizes
        out[np.argmax(np.where(room, raw - out, -np.inf))] += 1
    while out.sum() > total:   # the floor of 1 per group overshot: take from the largest shares
        out[np.argmax(np.where(out > 1, out - raw, -np.inf))] -= 1
    return out


def _split_group(vectors: np.ndarray, k: int, seed: int, niter: int) -> np.ndarray:
    if k >= len(vectors):
        return np.ascontiguousarray(vectors, dtype=np.float32)
    return faiss_kmeans(vectors, k, seed, niter)[0]


def split_kmeans(vectors: np.ndarray, k: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Level-1 centroids (k, D) by a coarse k-means and a split of each coarse cluster."""
    coarse_k = max(2, round(math.sqrt(k)))
    coarse, _ = faiss_kmeans(vectors, coarse_k, seed, niter)
    groups, _ = nearest(vectors, coarse)
    sizes = np.bincount(groups, minlength=coarse_k)
    used = np.flatnonzero(sizes)
    counts = shares(sizes[used], k)
    members = [vectors[groups == g] for g in used]
    try:
        import ray

        remote = ray.is_initialized()
    except ImportError:
        remote = False
    if remote:   # one task per coarse cluster; its rows travel through the object store once
        task = ray.remote(_split_group).options(num_cpus=1)
        parts = ray.get([task.remote(rows, int(c), seed + i, niter) for i, (rows, c) in enumerate(zip(members, counts))])
    else:
        parts = [_split_group(rows, int(c), seed + i, niter) for i, (rows, c) in enumerate(zip(members, counts))]
    return np.concatenate(parts).astype(np.float32)


def resample_centroids(vectors: np.ndarray, centroids: np.ndarray, points_per_cluster: int, steps: int,
                       seed: int = 0) -> np.ndarray:
    """Vo et al.'s resampling: `steps` times, replace each centroid by the mean of the
    `points_per_cluster` points nearest to it (a k-NN from each centroid into the data)."""
    import faiss

    for _ in range(steps):
        index = faiss.IndexFlatL2(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        _, near = index.search(np.ascontiguousarray(centroids, dtype=np.float32), min(points_per_cluster, len(vectors)))
        centroids = vectors[near].mean(1).astype(np.float32)
    return centroids


class HierarchicalKMeans(ClusteringMethod):
    """Level-1 clusters (n_clusters = levels[0]) plus a tree above them: `parents[i]` (K_i,)
    maps level i+1's clusters to level i+2's. `predict` returns level-1 clusters;
    `predict_levels` every level's, (n, L) int64."""

    name = "hkmeans"

    def __init__(self, levels: Sequence[int], weighted: bool = False, split_above: int = 2048, niter: int = 20,
                 resampling_steps: int = 0, points_per_cluster: int = 32, max_points_per_centroid: int = 256,
                 seed: int = 0, use_gpu: bool = False):
        levels = [int(k) for k in levels]
        if not levels or any(a <= b for a, b in zip(levels, levels[1:])) or levels[-1] < 2:
            raise ValueError(f"hkmeans: levels must be decreasing cluster counts >= 2 (level 1 first), got {levels}")
        if resampling_steps < 0 or points_per_cluster < 1 or niter < 1 or max_points_per_centroid < 1:
            raise ValueError("hkmeans: resampling_steps >= 0, points_per_cluster, niter and "
                             "max_points_per_centroid >= 1")
        super().__init__(levels[0])
        self.levels, self.weighted, self.split_above, self.niter = levels, weighted, split_above, niter
        self.resampling_steps, self.points_per_cluster = resampling_steps, points_per_cluster
        self.max_points_per_centroid, self.seed, self.use_gpu = max_points_per_centroid, seed, use_gpu
        self.centroids: list[np.ndarray] = []   # per level, (K_i, D)
        self.parents: list[np.ndarray] = []     # per level above 1: (K_{i-1},) -> cluster at level i
        self.temperature = 1.0

    def fit(self, vectors: np.ndarray, labels=None) -> "HierarchicalKMeans":
        vectors = self.check_input(vectors)
        k1 = self.levels[0]
        if k1 > self.split_above:
            level1 = split_kmeans(vectors, k1, self.seed, self.niter)
        else:
            level1 = faiss_kmeans(vectors, k1, self.seed, self.niter, gpu=self.use_gpu)[0]
        if self.resampling_steps:
            level1 = resample_centroids(vectors, level1, self.points_per_cluster, self.resampling_steps, self.seed)
        self.centroids, self.parents = [level1], []
        sizes = np.bincount(nearest(vectors, level1)[0], minlength=k1).astype(np.float32)
        for depth, k in enumerate(self.levels[1:], start=2):
            below = self.centroids[-1]
            weights = sizes if self.weighted else None
            upper = faiss_kmeans(below, k, self.seed + depth, self.niter, weights)[0]
            if self.resampling_steps:
                upper = resample_centroids(below, upper, self.points_per_cluster, self.resampling_steps, self.seed)
            parent, _ = nearest(below, upper)
            sizes = np.bincount(parent, weights=sizes, minlength=k).astype(np.float32)
            self.centroids.append(upper)
            self.parents.append(parent)
        sample = vectors[:: max(1, len(vectors) // 20000)]
        self.temperature = float(np.median(nearest(sample, level1)[1])) or 1.0
        return self

    def fit_rows(self, rows, with_labels: bool = False) -> "HierarchicalKMeans":
        """Level 1 on a sample of `max_points_per_centroid` x K rows (all rows of smaller stores)."""
        sample = rows.sample(self.max_points_per_centroid * self.levels[0], self.seed)
        return self.fit(sample.vectors)

    def fit_resources(self) -> dict:
        # the split tasks need CPUs of their own: the coordinating task holds none
        return {"num_cpus": 0 if self.levels[0] > self.split_above else 1}

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level-1 cluster (n,) int64 and confidence (n,) float32 = exp(-d / tau), d the squared
        distance to the centroid and tau its median at fit time: ~0.5 for a typical member, -> 0
        for outliers (at K = 10^4 a softmax over centroids would cost a second search)."""
        if not self.centroids:
            raise RuntimeError("hkmeans: call fit() before predict()")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1] != self.centroids[0].shape[1]:
            raise ValueError(f"hkmeans: embeddings have width {vectors.shape[1]}, centroids {self.centroids[0].shape[1]}")
        cluster, distance = nearest(vectors, self.centroids[0])
        return cluster, np.exp(-distance / self.temperature).astype(np.float32)

    def fitted_state(self) -> tuple[dict, dict]:
        arrays = {f"centroids_l{depth}": c for depth, c in enumerate(self.centroids, start=1)}
        arrays.update({f"parents_l{depth}": p for depth, p in enumerate(self.parents, start=2)})
        return arrays, {"temperature": self.temperature}

    def restore_fitted(self, arrays: dict, values: dict) -> "HierarchicalKMeans":
        self.centroids = [np.ascontiguousarray(arrays[f"centroids_l{d}"], np.float32) for d in range(1, len(self.levels) + 1)]
        self.parents = [arrays[f"parents_l{d}"].astype(np.int64) for d in range(2, len(self.levels) + 1)]
        self.temperature = values["temperature"]
        return self

    def predict_levels(self, vectors: np.ndarray) -> np.ndarray:
        """(n, L) int64: the row's cluster at every level, level 1 first."""
        cluster, _ = self.predict(vectors)
        out = [cluster]
        for parent in self.parents:
            out.append(parent[out[-1]])
        return np.stack(out, axis=1)
