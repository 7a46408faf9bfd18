"""k-means with FAISS (GPU when the GPU wheel and a device are present)."""
from __future__ import annotations

import logging

import numpy as np

from raycluster.methods.base import ClusteringMethod
from raycluster.metrics import size_entropy

log = logging.getLogger(__name__)


class FaissKMeans(ClusteringMethod):
    """faiss.Kmeans (Lloyd iterations, GPU when present) from `n_init` k-means++ seedings
    (scikit-learn's `kmeans_plusplus`); the restart with the lowest objective wins.

    Why k-means++ and not FAISS's random init: docs/methods/kmeans.md.

    balance_tolerance: restarts whose objective is within (1 + balance_tolerance) x the lowest are
    near-ties, and among them the one with the most even cluster sizes (size entropy) wins; 0 (the
    default) keeps the plain lowest-objective rule. For embeddings whose distances mean little at
    the scale of a few percent (a UMAP map) when the clusters are known to be of similar size
    (the case that made it: docs/methods/kmeans.md).

    fit_rows (a store of any size): the restarts run on a uniform sample of at most
    `max_points_per_centroid` x K rows (FAISS's own training-sample rule), then up to
    `refine_passes` distributed Lloyd passes over every row (`methods.lloyd`) bring the centroids
    to what full-data k-means reaches; the caller holds (K, D) and one batch at a time.

    confidence: softmax over centroids of -d^2 / tau, with tau the median squared distance of
    points to their own centroid, so it reads the same whatever the embedding scale: ~1/K on a
    boundary, ~1 when one centroid is much nearer than the rest.
    """

    name = "kmeans"

    def __init__(self, n_clusters: int, n_init: int = 10, max_iter: int = 100, spherical: bool = False,
                 seed: int = 0, use_gpu: bool = False, balance_tolerance: float = 0.0,
                 max_points_per_centroid: int = 256, refine_passes: int = 3):
        super().__init__(n_clusters)
        self.n_init, self.max_iter, self.spherical, self.seed, self.use_gpu = n_init, max_iter, spherical, seed, use_gpu
        if max_points_per_centroid < 1 or refine_passes < 0:
            raise ValueError(f"kmeans: max_points_per_centroid must be >= 1 and refine_passes >= 0, got "
                             f"{max_points_per_centroid} and {refine_passes}")
        self.max_points_per_centroid, self.refine_passes = max_points_per_centroid, refine_passes
        self.refine_info: dict = {}
        if balance_tolerance < 0:
            raise ValueError(f"kmeans: balance_tolerance must be >= 0, got {balance_tolerance}")
        self.balance_tolerance = balance_tolerance
        self.centroids = None
        self.temperature = 1.0

    def fit(self, vectors: np.ndarray, labels=None) -> "FaissKMeans":
        import faiss

        vectors = self.check_input(vectors)
        gpu = self.use_gpu and hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
        if self.use_gpu and not gpu:
            log.warning("kmeans: use_gpu=true but FAISS sees no GPU; running on CPU")
        from sklearn.cluster import kmeans_plusplus

        rng = np.random.default_rng(self.seed)
        # k-means++ seeding is O(N K) per restart: seed on a sample as large as FAISS trains on.
        sample_size = min(len(vectors), 256 * self.n_clusters)
        restarts = []   # (cost, size entropy, centroids); lower cost is better
        for restart_seed in rng.integers(0, 2**31 - 1, self.n_init):  # independent restarts per seed
            sample = vectors[rng.choice(len(vectors), sample_size, replace=False)] if sample_size < len(vectors) else vectors
            seeds, _ = kmeans_plusplus(sample, self.n_clusters, random_state=int(restart_seed))
            kmeans = faiss.Kmeans(vectors.shape[1], self.n_clusters, niter=self.max_iter, spherical=self.spherical,
                                  seed=int(restart_seed), gpu=gpu, max_points_per_centroid=max(256, len(vectors)))
            kmeans.train(vectors, init_centroids=np.ascontiguousarray(seeds, dtype=np.float32))
            # FAISS reports summed squared distances (L2), or summed cosines to maximise (spherical).
            cost = -float(kmeans.obj[-1]) if self.spherical else float(kmeans.obj[-1])
            balance = size_entropy(kmeans.index.search(vectors, 1)[1][:, 0], self.n_clusters) if self.balance_tolerance else 0.0
            restarts.append((cost, balance, kmeans.centroids.copy()))
        lowest = min(cost for cost, _, _ in restarts)
        near_ties = [r for r in restarts if r[0] <= lowest + self.balance_tolerance * abs(lowest)]
        _, _, centroids = max(near_ties, key=lambda r: (r[1], -r[0]))   # most even sizes, then lowest cost
        self.centroids = centroids
        distances = self._distances(vectors)
        self.temperature = float(np.median(distances.min(axis=1))) or 1.0
        return self

    def fit_rows(self, rows, with_labels: bool = False) -> "FaissKMeans":
        """Fit on a StoreRows: restarts on a sample, then Lloyd passes over every row."""
        from raycluster.methods.kmeans.lloyd import refine

        sample = rows.sample(self.max_points_per_centroid * self.n_clusters, self.seed)
        self.fit(sample.vectors)
        self.refine_info = {"sample_rows": int(len(sample.keys)), "rows": rows.n_rows, "passes": 0}
        if len(sample.keys) < rows.n_rows and self.refine_passes:
            self.centroids, _, passes = refine(rows, self.centroids, self.refine_passes, self.spherical)
            self.refine_info["passes"] = passes
            self.temperature = float(np.median(self._distances(sample.vectors).min(axis=1))) or 1.0
        return self

    def fit_resources(self) -> dict:
        return {"num_cpus": 1, "num_gpus": 1 if self.use_gpu else 0}

    def fitted_state(self) -> tuple[dict, dict]:
        return {"centroids": self.centroids}, {"temperature": self.temperature}

    def restore_fitted(self, arrays: dict, values: dict) -> "FaissKMeans":
        self.centroids, self.temperature = np.ascontiguousarray(arrays["centroids"], np.float32), values["temperature"]
        return self

    def _distances(self, vectors: np.ndarray) -> np.ndarray:
        """(N, K) squared Euclidean distances to the centroids."""
        import faiss

        return faiss.pairwise_distances(vectors, self.centroids)

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.centroids is None:
            raise RuntimeError("kmeans: call fit() before predict()")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"kmeans: embeddings have width {vectors.shape[1]}, centroids {self.centroids.shape[1]}")
        logits = -self._distances(vectors) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return probabilities.argmax(axis=1).astype(np.int64), probabilities.max(axis=1).astype(np.float32)
