"""k-means, or a Gaussian mixture, on a UMAP embedding of the features (N2D without its autoencoder)."""
from __future__ import annotations

import numpy as np

from raycluster.methods.base import ClusteringMethod
from raycluster.methods.kmeans.method import FaissKMeans


CLUSTERERS = {"kmeans", "gmm"}   # what clusters the UMAP embedding
MAX_REFIT_NEIGHBORS = 100        # the wider neighbourhood's bound: UMAP's cost grows with it


def wider_neighborhood(n_rows: int, n_clusters: int, min_cluster_share: float, n_neighbors: int) -> int:
    """The UMAP neighbourhood that cannot isolate a group of under `min_cluster_share` x the mean
    cluster size n_rows / n_clusters (a group of fewer rows than n_neighbors has to link outside
    itself): ceil(share x n_rows / n_clusters), at least `n_neighbors`, at most MAX_REFIT_NEIGHBORS."""
    return int(min(max(n_neighbors, np.ceil(min_cluster_share * n_rows / n_clusters)), MAX_REFIT_NEIGHBORS))


def smallest_cluster_share(clusters: np.ndarray, n_clusters: int) -> float:
    """(N,) int64 cluster ids in [0, n_clusters) -> the smallest cluster's rows over the mean size N / n_clusters."""
    return float(np.bincount(clusters, minlength=n_clusters).min() * n_clusters / len(clusters))


SEPARATION_ROWS = 10_000   # map_separation's sample: the silhouette costs O(rows^2)


def map_separation(embedded: np.ndarray, clusters: np.ndarray, seed: int = 0) -> float:
    """(n, d) float32 UMAP coordinates, (n,) int64 clusters -> their mean silhouette in that map
    (on a seeded sample of SEPARATION_ROWS rows past that size): how well the clusters separate where they were made."""
    from sklearn.metrics import silhouette_score

    sample = min(len(embedded), SEPARATION_ROWS)
    return float(silhouette_score(embedded, clusters, sample_size=sample if sample < len(embedded) else None,
                                  random_state=seed))


def consensus_clusters(partitions: np.ndarray, n_clusters: int, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """(R, N) int64 partitions of the same rows (ids in [0, n_clusters)) -> (N,) int64 consensus
    partition: k-means on each row's R one-hot memberships concatenated (N, R x n_clusters), i.e. on
    how many of the R partitions put two rows together (evidence accumulation, Fred & Jain 2005,
    without its N x N co-association matrix: memory O(N x R x K)). Why: a partition's mistakes
    (two classes merged, one split) move with UMAP's seed, the rows that belong together do not."""
    onehot = np.eye(n_clusters, dtype=np.float32)[np.asarray(partitions)]   # (R, N, K)
    memberships = np.ascontiguousarray(onehot.transpose(1, 0, 2).reshape(onehot.shape[1], -1))   # (N, R x K)
    kmeans = FaissKMeans(n_clusters, n_init=n_init, seed=seed).fit(memberships)
    return kmeans.predict(memberships)[0].astype(np.int64)


class UMAPKMeans(ClusteringMethod):
    """k-means (or a Gaussian mixture) on a UMAP embedding of the vectors (N2D, McConville et al.
    2019, without its autoencoder): a baseline on any features, and DiEC's and DiFiC's start.

    Why: learned features often hold classes as curved, elongated manifolds that k-means in the
    input space cuts across; UMAP (min_dist 0) keeps the k-NN manifold and packs each one tight,
    so k-means in its space follows them (measured: docs/methods/kmeans.md).

    fit: UMAP on at most `max_points` rows (a uniform sample: UMAP costs ~20 s for 10k rows on
    2 cores and grows faster than linearly), then on its `n_components`-d output `clusterer`:
    "kmeans" (`n_init` restarts, `balance_tolerance` as in `FaissKMeans`) or "gmm", a Gaussian
    mixture with full covariances (`n_init` EM restarts, the highest likelihood wins; N2D's own
    clusterer). Why a mixture: UMAP packs a class into a tight but often elongated or uneven blob,
    which k-means may cut in two while it merges two round neighbours; a full covariance follows
    the blob's shape (docs/methods/kmeans.md). Its cost grows with K x n_components^2:
    for tens of clusters, not thousands;
    `min_cluster_share` (0: off): a fit whose smallest cluster holds under this share of the mean
    cluster size is fitted once more with the wider neighbourhood `wider_neighborhood` gives. Why:
    with K fixed, UMAP at 15 neighbours may isolate a small sub-mode (a class's rows written one
    way) as a cluster of its own and merge two classes to stay at K; a neighbourhood wider than the
    group links it to the rows nearest it. A cluster that survives the wider fit is kept (a rare class).
    `used_neighbors` is the neighbourhood of the kept fit (the widest over restarts; docs/methods/kmeans.md);
    `umap_restarts` (1: off): UMAP, the clusterer and the check run this many times with seeds
    seed, seed + 1, ... on the same rows, and the clusters are their consensus (`consensus_clusters`).
    Why: UMAP's layout depends on its seed, and with K fixed one layout may merge two classes and
    split another where others do not; rows that belong together stay together in most layouts.
    `restart_agreement` lists each fit's adjusted Rand index with the consensus (no labels: how much
    the seeds agreed); `embedded` and `kmeans` are then None (no one map holds the consensus);
    `fit_clusters` (N,) int64 holds the sampled rows' clusters, -1 for the rest; `embedded`
    (n_fitted, n_components) float32, the sampled rows' UMAP coordinates (not saved).
    predict: the vote of the row's `n_neighbors` nearest fitted rows' clusters, weighted
    exp(-(d - d_1) / mean(d - d_1)) with d the `metric` distance (UMAP's weights; a fitted row
    keeps its own cluster). Exact k-NN by FAISS over the fitted rows: fast in batches, savable
    as plain arrays (the fitted rows and their clusters, no UMAP object to pickle), and on
    held-out ImageNet-50 rows as accurate as UMAP's `transform` (tests/test_kmeans.py).
    """

    name = "umap_kmeans"

    def __init__(self, n_clusters: int, n_components: int = 10, n_neighbors: int = 15, max_points: int = 50_000,
                 metric: str = "cosine", seed: int = 0, use_gpu: bool = False, n_init: int = 10,
                 balance_tolerance: float = 0.0, clusterer: str = "kmeans", min_cluster_share: float = 0.0,
                 umap_restarts: int = 1):
        super().__init__(n_clusters)
        if clusterer not in CLUSTERERS:
            raise ValueError(f"umap_kmeans: clusterer must be one of {sorted(CLUSTERERS)}, got {clusterer!r}")
        if not 0.0 <= min_cluster_share < 1.0:
            raise ValueError(f"umap_kmeans: min_cluster_share must be in [0, 1), got {min_cluster_share}")
        if umap_restarts < 1:
            raise ValueError(f"umap_kmeans: umap_restarts must be >= 1, got {umap_restarts}")
        self.clusterer, self.min_cluster_share, self.umap_restarts = clusterer, min_cluster_share, umap_restarts
        self.used_neighbors = None
        self.restart_agreement = []
        self.n_components, self.n_neighbors, self.max_points = n_components, n_neighbors, max_points
        self.metric, self.seed, self.use_gpu = metric, seed, use_gpu
        self.n_init, self.balance_tolerance = n_init, balance_tolerance
        self.kmeans = self.fit_clusters = self.fitted_rows = self.fitted_clusters = None
        self.embedded = None
        self._index = None

    def fit(self, vectors: np.ndarray, labels=None) -> "UMAPKMeans":
        import umap
        from sklearn.metrics import adjusted_rand_score

        vectors = self.check_input(vectors)
        rng = np.random.default_rng(self.seed)
        rows = (np.sort(rng.choice(len(vectors), self.max_points, replace=False)) if len(vectors) > self.max_points
                else np.arange(len(vectors)))
        sample = np.ascontiguousarray(vectors[rows])
        fits = [self._checked_fit(umap, sample, self.seed + restart) for restart in range(self.umap_restarts)]
        if len(fits) == 1:
            self.embedded, clusters, neighbors, self.kmeans = fits[0]
            self.restart_agreement = []
        else:   # no one map or k-means holds the consensus
            partitions = np.stack([fit[1] for fit in fits])
            clusters = consensus_clusters(partitions, self.n_clusters, self.seed, self.n_init)
            self.restart_agreement = [round(float(adjusted_rand_score(clusters, partition)), 4) for partition in partitions]
            self.embedded, self.kmeans, neighbors = None, None, max(fit[2] for fit in fits)
        self.used_neighbors, self.fitted_rows, self._index = neighbors, sample, None
        self.fit_clusters = np.full(len(vectors), -1, dtype=np.int64)
        self.fit_clusters[rows] = clusters
        self.fitted_clusters = self.fit_clusters[rows]
        return self

    def _checked_fit(self, umap, sample: np.ndarray, seed: int) -> tuple:
        """(n, D) rows -> ((n, n_components) float32 UMAP embedding, (n,) int64 clusters, neighbourhood,
        the FaissKMeans in the map or None) of one fit with UMAP and clusterer seeded `seed`, refitted
        wider by `min_cluster_share`."""
        neighbors = min(self.n_neighbors, len(sample) - 1)
        embedded, clusters, kmeans = self._embed_and_cluster(umap, sample, neighbors, seed)
        wider = min(wider_neighborhood(len(sample), self.n_clusters, self.min_cluster_share, neighbors), len(sample) - 1)
        if smallest_cluster_share(clusters, self.n_clusters) < self.min_cluster_share and wider > neighbors:
            neighbors = wider
            embedded, clusters, kmeans = self._embed_and_cluster(umap, sample, neighbors, seed)
        return embedded, clusters, neighbors, kmeans

    def _embed_and_cluster(self, umap, sample: np.ndarray, n_neighbors: int, seed: int) -> tuple:
        """(n, D) rows -> their (n, n_components) float32 UMAP embedding at `n_neighbors`, and `_cluster`'s
        (clusters, FaissKMeans or None) of it."""
        reducer = umap.UMAP(n_neighbors=n_neighbors, n_components=self.n_components, min_dist=0.0,
                            metric=self.metric, random_state=seed, n_jobs=1)
        embedded = np.ascontiguousarray(reducer.fit_transform(sample), dtype=np.float32)
        return (embedded, *self._cluster(embedded, seed))

    def _cluster(self, embedded: np.ndarray, seed: int) -> tuple:
        """(n, n_components) float32 UMAP output -> (n,) int64 clusters by `clusterer`, and the fitted
        FaissKMeans that assigns new rows (None for the mixture: new rows go by their map neighbours)."""
        if self.clusterer == "gmm":
            from sklearn.mixture import GaussianMixture

            mixture = GaussianMixture(self.n_clusters, covariance_type="full", n_init=self.n_init,
                                      random_state=seed).fit(embedded)
            return mixture.predict(embedded).astype(np.int64), None   # predict reads the fitted rows, not the mixture
        kmeans = FaissKMeans(self.n_clusters, n_init=self.n_init, seed=seed, use_gpu=self.use_gpu,
                             balance_tolerance=self.balance_tolerance).fit(embedded)
        return kmeans.predict(embedded)[0], kmeans

    def fit_rows(self, rows, with_labels: bool = False) -> "UMAPKMeans":
        """UMAP sees at most `max_points` rows anyway: read only that sample of the store."""
        return self.fit(rows.sample(self.max_points, self.seed).vectors)

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cluster (n,) int64: the weighted vote of the row's nearest fitted rows' clusters;
        confidence (n,) float32: the winner's share of the vote."""
        from raycluster.neighbors.manifold import flat_index, search_distances

        if self.fitted_rows is None:
            raise RuntimeError("umap_kmeans: call fit() before predict()")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape[1] != self.fitted_rows.shape[1]:
            raise ValueError(f"umap_kmeans: embeddings have width {vectors.shape[1]}, fitted on {self.fitted_rows.shape[1]}")
        if self._index is None:
            self._index = flat_index(self.fitted_rows, self.metric)
        k = min(self.n_neighbors, len(self.fitted_rows))
        distance, neighbors = search_distances(self._index, vectors, k, self.metric)
        excess = distance - distance[:, :1]
        weights = np.exp(-excess / np.maximum(excess.mean(axis=1, keepdims=True), 1e-12))
        weights[distance[:, 0] <= 1e-6] = np.eye(k, dtype=weights.dtype)[0]   # a fitted row keeps its cluster
        votes = np.zeros((len(vectors), self.n_clusters))
        np.add.at(votes, (np.repeat(np.arange(len(vectors)), k), self.fitted_clusters[neighbors].ravel()), weights.ravel())
        cluster = votes.argmax(axis=1)
        return cluster.astype(np.int64), (votes.max(axis=1) / votes.sum(axis=1)).astype(np.float32)

    def fitted_state(self) -> tuple[dict, dict]:
        # predict reads only the fitted rows and their clusters; the k-means centroids (in UMAP's
        # space) are kept for inspection
        arrays, values = self.kmeans.fitted_state() if self.kmeans is not None else ({}, {})
        return {"fitted_rows": self.fitted_rows, "fitted_clusters": self.fitted_clusters, **arrays}, values

    def restore_fitted(self, arrays: dict, values: dict) -> "UMAPKMeans":
        self.fitted_rows, self.fitted_clusters = arrays["fitted_rows"], arrays["fitted_clusters"].astype(np.int64)
        if "centroids" in arrays:
            self.kmeans = FaissKMeans(self.n_clusters, seed=self.seed).restore_fitted(arrays, values)
        return self

    def __getstate__(self):   # the FAISS index is rebuilt where the method is used (Ray actors)
        return {**self.__dict__, "_index": None}
