"""k-means with FAISS (GPU when the GPU wheel and a device are present)."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from raycluster.data.store import unit_rows
from raycluster.methods.base import ClusteringMethod
from raycluster.metrics import size_entropy

log = logging.getLogger(__name__)


class KMeans(ClusteringMethod):
    """faiss.Kmeans (Lloyd iterations, GPU when present) from `n_init` k-means++ seedings
    (scikit-learn's `kmeans_plusplus`); the restart with the lowest objective wins.

    Why k-means++ and not FAISS's random init: on Tiny-ImageNet (20 classes) EfficientNet
    features, random init reached ACC 0.47 and k-means++ 0.52 (scikit-learn's figure).

    balance_tolerance: restarts whose objective is within (1 + balance_tolerance) x the lowest are
    near-ties, and among them the one with the most even cluster sizes (size entropy) wins; 0 (the
    default) keeps the plain lowest-objective rule. For embeddings whose distances mean little at
    the scale of a few percent (a UMAP map) when the clusters are known to be of similar size:
    DiFiC's warm-up S* of one seed (MNIST) has a lowest-objective solution with 4 and 9 merged and
    the 1s split (ACC 0.775, size entropy 0.967), and one 2.5% costlier with one cluster per digit
    (ACC 0.849, entropy 0.991), found by 13 of 40 restarts.

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

    def fit(self, vectors: np.ndarray, labels=None) -> "KMeans":
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

    def fit_rows(self, rows, with_labels: bool = False) -> "KMeans":
        """Fit on a StoreRows: restarts on a sample, then Lloyd passes over every row."""
        from raycluster.methods.lloyd import refine

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

    def restore_fitted(self, arrays: dict, values: dict) -> "KMeans":
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


class UMAPKMeans(ClusteringMethod):
    """k-means on a UMAP embedding of the vectors (N2D, McConville et al. 2019, without its
    autoencoder): a baseline on any features, and how DiFiC clusters its warm-up S*.

    Why: learned features often hold classes as curved, elongated manifolds that k-means in the
    input space cuts across (MNIST, DiFiC's warm-up S*: k-means ACC 0.74, two clusters each half 4s
    and half 9s); UMAP (min_dist 0) keeps the k-NN manifold and packs each one tight, so k-means
    in its space follows them (same S*: 0.90 over 3 UMAP seeds).

    fit: UMAP on at most `max_points` rows (a uniform sample: UMAP costs ~20 s for 10k rows on
    2 cores and grows faster than linearly), k-means (`n_init` restarts, `balance_tolerance` as in
    `KMeans`) on its `n_components`-d output;
    `fit_clusters` (N,) int64 holds the sampled rows' clusters, -1 for the rest.
    predict: the vote of the row's `n_neighbors` nearest fitted rows' clusters, weighted
    exp(-(d - d_1) / mean(d - d_1)) with d the `metric` distance (UMAP's weights; a fitted row
    keeps its own cluster). Exact k-NN by FAISS over the fitted rows: fast in batches, savable
    as plain arrays (the fitted rows and their clusters, no UMAP object to pickle), and on
    held-out ImageNet-50 rows as accurate as UMAP's `transform` (tests/test_kmeans.py).
    """

    name = "umap_kmeans"

    def __init__(self, n_clusters: int, n_components: int = 10, n_neighbors: int = 15, max_points: int = 50_000,
                 metric: str = "cosine", seed: int = 0, use_gpu: bool = False, n_init: int = 10,
                 balance_tolerance: float = 0.0):
        super().__init__(n_clusters)
        self.n_components, self.n_neighbors, self.max_points = n_components, n_neighbors, max_points
        self.metric, self.seed, self.use_gpu = metric, seed, use_gpu
        self.n_init, self.balance_tolerance = n_init, balance_tolerance
        self.kmeans = self.fit_clusters = self.fitted_rows = self.fitted_clusters = None
        self._index = None

    def fit(self, vectors: np.ndarray, labels=None) -> "UMAPKMeans":
        import umap

        vectors = self.check_input(vectors)
        rng = np.random.default_rng(self.seed)
        rows = (np.sort(rng.choice(len(vectors), self.max_points, replace=False)) if len(vectors) > self.max_points
                else np.arange(len(vectors)))
        reducer = umap.UMAP(n_neighbors=min(self.n_neighbors, len(rows) - 1), n_components=self.n_components,
                            min_dist=0.0, metric=self.metric, random_state=self.seed, n_jobs=1)
        embedded = np.ascontiguousarray(reducer.fit_transform(vectors[rows]), dtype=np.float32)
        self.fitted_rows, self._index = np.ascontiguousarray(vectors[rows]), None
        self.kmeans = KMeans(self.n_clusters, n_init=self.n_init, seed=self.seed, use_gpu=self.use_gpu,
                             balance_tolerance=self.balance_tolerance).fit(embedded)
        self.fit_clusters = np.full(len(vectors), -1, dtype=np.int64)
        self.fit_clusters[rows], _ = self.kmeans.predict(embedded)
        self.fitted_clusters = self.fit_clusters[rows]
        return self

    def fit_rows(self, rows, with_labels: bool = False) -> "UMAPKMeans":
        """UMAP sees at most `max_points` rows anyway: read only that sample of the store."""
        return self.fit(rows.sample(self.max_points, self.seed).vectors)

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cluster (n,) int64: the weighted vote of the row's nearest fitted rows' clusters;
        confidence (n,) float32: the winner's share of the vote."""
        import faiss

        if self.fitted_rows is None:
            raise RuntimeError("umap_kmeans: call fit() before predict()")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1] != self.fitted_rows.shape[1]:
            raise ValueError(f"umap_kmeans: embeddings have width {vectors.shape[1]}, fitted on {self.fitted_rows.shape[1]}")
        cosine = self.metric == "cosine"
        if self._index is None:
            base = unit_rows(self.fitted_rows) if cosine else self.fitted_rows
            self._index = faiss.IndexFlatIP(base.shape[1]) if cosine else faiss.IndexFlatL2(base.shape[1])
            self._index.add(base)
        k = min(self.n_neighbors, len(self.fitted_rows))
        scores, neighbors = self._index.search(unit_rows(vectors) if cosine else vectors, k)
        distance = 1.0 - scores if cosine else np.sqrt(np.maximum(scores, 0.0))
        excess = distance - distance[:, :1]
        weights = np.exp(-excess / np.maximum(excess.mean(axis=1, keepdims=True), 1e-12))
        weights[distance[:, 0] <= 1e-6] = np.eye(k, dtype=weights.dtype)[0]   # a fitted row keeps its cluster
        votes = np.zeros((len(vectors), self.n_clusters))
        np.add.at(votes, (np.repeat(np.arange(len(vectors)), k), self.fitted_clusters[neighbors].ravel()), weights.ravel())
        cluster = votes.argmax(axis=1)
        return cluster.astype(np.int64), (votes.max(axis=1) / votes.sum(axis=1)).astype(np.float32)

    def fitted_state(self) -> tuple[dict, dict]:
        arrays, values = self.kmeans.fitted_state()
        return {"fitted_rows": self.fitted_rows, "fitted_clusters": self.fitted_clusters, **arrays}, values

    def restore_fitted(self, arrays: dict, values: dict) -> "UMAPKMeans":
        self.fitted_rows, self.fitted_clusters = arrays["fitted_rows"], arrays["fitted_clusters"].astype(np.int64)
        self.kmeans = KMeans(self.n_clusters, seed=self.seed).restore_fitted(arrays, values)
        return self

    def __getstate__(self):   # the FAISS index is rebuilt where the method is used (Ray actors)
        return {**self.__dict__, "_index": None}


def manifold_kmeans(vectors: np.ndarray, n_clusters: int, **settings) -> np.ndarray:
    """vectors (N, D) float32 -> clusters (N,) int64 of `UMAPKMeans(n_clusters, **settings)` fitted
    on them, -1 for rows outside its UMAP sample."""
    return UMAPKMeans(n_clusters, **settings).fit(vectors).fit_clusters


def check_manifold(manifold: Optional[dict], method: str) -> Optional[dict]:
    """A method's `manifold` setting (UMAPKMeans keyword arguments, or None: no UMAP), with one
    readable error for a key UMAPKMeans does not take (a typo would otherwise surface late)."""
    import inspect

    if not manifold:
        return None
    known = set(inspect.signature(UMAPKMeans).parameters) - {"n_clusters", "seed", "use_gpu"}
    if set(manifold) - known:
        raise ValueError(f"{method}: unknown manifold setting(s) {sorted(set(manifold) - known)}; known: {sorted(known)}")
    return dict(manifold)


def cluster_means(vectors: np.ndarray, clusters: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """(N, D) vectors, (N,) int cluster ids (-1: not clustered) -> (K, D) mean of each cluster's
    rows, K = len(fallback); a cluster with no rows keeps its row of `fallback` (K, D)."""
    return np.stack([vectors[clusters == k].mean(0) if (clusters == k).any() else fallback[k]
                     for k in range(len(fallback))]).astype(np.float32)


def start_clusters(vectors: np.ndarray, n_clusters: int, seed: int = 0, manifold: Optional[dict] = None,
                   labels: Optional[np.ndarray] = None) -> tuple[np.ndarray, Optional[np.ndarray], dict]:
    """Where a clustering head starts (DiEC's DEC centres, DiFiC's prototypes), from (N, D) float32.

    k-means on `vectors` always runs (its scores are the papers' "k-means on the features" row);
    with `manifold` (UMAPKMeans settings) the start is k-means on a UMAP embedding instead and
    the centres are its clusters' means in `vectors`' space.
    Returns centres (K, D) float32; the manifold clusters (N,) int64 (-1 outside UMAP's sample)
    or None; {"init_kmeans", "init_manifold"} supervised scores when all labels are known."""
    from raycluster.metrics import supervised_metrics

    scored = labels is not None and (np.asarray(labels) >= 0).all()
    kmeans = KMeans(n_clusters, seed=seed).fit(vectors)
    clusters, _ = kmeans.predict(vectors)
    centers, initial, scores = kmeans.centroids, None, {}
    if scored:
        scores["init_kmeans"] = supervised_metrics(labels, clusters)
    if manifold is not None:
        initial = manifold_kmeans(vectors, n_clusters, seed=seed, **manifold)
        centers = cluster_means(vectors, initial, centers)
        if scored:
            sampled = initial >= 0
            scores["init_manifold"] = supervised_metrics(np.asarray(labels)[sampled], initial[sampled])
    return np.asarray(centers, np.float32), initial, scores
