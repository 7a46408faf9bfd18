"""UMAP embeddings whose k-NN graph comes from an exact FAISS search.

umap-learn finds the neighbours of 4,096 rows or more with NN-descent (pynndescent), whose numba
functions are compiled again in every new process (a job, a Ray task): on a few cores that
compilation is most of a UMAP of some thousand rows. An exact FAISS search gives the true k-NN
graph (NN-descent's is approximate) with nothing to compile; UMAP then builds its fuzzy graph
and layout from it as usual. Below 4,096 rows umap-learn computes all distances itself, exactly,
and is left to do so. Timings and what each graph gives k-means on MNIST:
`python bench/umap_neighbors.py` (bench/README.md).

Used for the report's map. `UMAPKMeans` keeps umap-learn's own search: the baseline's measured
figures were made with it, and on MNIST the exact graph did not cluster better.
"""
from __future__ import annotations

import warnings

import numpy as np

from raycluster.data.store import unit_rows

# umap-learn's own cut-over from all pairwise distances to NN-descent (umap_.py, UMAP.fit)
SMALL_DATA_ROWS = 4096


def flat_index(rows: np.ndarray, metric: str = "euclidean"):
    """Exact FAISS index over (n, D) rows: inner product of unit rows for "cosine", L2 otherwise."""
    import faiss

    cosine = metric == "cosine"
    base = unit_rows(rows) if cosine else np.ascontiguousarray(rows, dtype=np.float32)
    index = faiss.IndexFlatIP(base.shape[1]) if cosine else faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    return index


def search_distances(index, queries: np.ndarray, k: int, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of `flat_index(rows, metric)` to (m, D) queries: (distances (m, k)
    float32, 1 - cosine for "cosine" (as umap-learn), Euclidean otherwise; indices (m, k) int64)."""
    cosine = metric == "cosine"
    scores, indices = index.search(unit_rows(queries) if cosine else np.ascontiguousarray(queries, dtype=np.float32), k)
    return (1.0 - scores if cosine else np.sqrt(np.maximum(scores, 0.0))), indices


def exact_knn(vectors: np.ndarray, k: int, metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """Every row's k nearest rows, itself included (first, at distance 0).

    vectors: (n, D) float; metric: "euclidean" or "cosine" (1 - cosine similarity, as umap-learn).
    Returns (indices (n, k) int64, distances (n, k) float32), nearest first.
    """
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"exact_knn: metric must be 'euclidean' or 'cosine', got {metric!r}")
    distances, indices = search_distances(flat_index(vectors, metric), vectors, k, metric)
    return indices.astype(np.int64), np.maximum(distances, 0.0).astype(np.float32)


def umap_embedding(vectors: np.ndarray, n_components: int = 2, n_neighbors: int = 15, min_dist: float = 0.1,
                   metric: str = "euclidean", seed: int = 0) -> np.ndarray:
    """(n, D) rows -> (n, n_components) float32 UMAP coordinates, the k-NN graph from `exact_knn`
    when umap-learn would otherwise run NN-descent (n >= SMALL_DATA_ROWS) and the metric is one
    FAISS searches exactly (euclidean, cosine); other metrics are left to umap-learn."""
    import umap

    settings = dict(n_components=n_components, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                    random_state=seed, n_jobs=1)
    if len(vectors) >= SMALL_DATA_ROWS and metric in ("euclidean", "cosine"):
        indices, distances = exact_knn(vectors, n_neighbors, metric)
        # no NN-descent search index: this UMAP cannot transform() new rows, and is not asked to
        settings["precomputed_knn"] = (indices, distances, None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        reducer = umap.UMAP(**settings)
        return np.ascontiguousarray(reducer.fit_transform(vectors), dtype=np.float32)


class BankNeighbors:
    """Each query row's k nearest rows of a fixed bank (a keyed sample of the training rows),
    by an exact FAISS search over the bank: O(bank) memory wherever it is used, however many rows
    are queried (CLUDI's neighbour view looks the rows up as the Ray Train workers read them).

    bank: (S, F) float32; metric: "cosine" or "euclidean".
    __call__(queries (n, F)) -> (n, k) int64 rows of the bank, nearest first; a query found in the
    bank (distance ~0: itself or an exact duplicate) skips that match.
    """

    def __init__(self, bank: np.ndarray, k: int, metric: str = "cosine"):
        if not 0 < k < len(bank):
            raise ValueError(f"BankNeighbors: k must be in 1..{len(bank) - 1} (the bank has {len(bank)} rows), got {k}")
        self.bank, self.k, self.metric = np.ascontiguousarray(bank, dtype=np.float32), k, metric
        self._index = None

    def __call__(self, queries: np.ndarray) -> np.ndarray:
        if self._index is None:
            self._index = flat_index(self.bank, self.metric)
        distances, found = search_distances(self._index, queries, self.k + 1, self.metric)
        itself = distances[:, :1] <= 1e-6
        return np.where(itself, found[:, 1:], found[:, :-1]).astype(np.int64)

    def fingerprint(self) -> dict:
        """What the neighbours depend on, for a training dataset's fingerprint."""
        from raycluster.fingerprint import array_fingerprint

        return {"class": "BankNeighbors", "k": self.k, "metric": self.metric, "bank": array_fingerprint(self.bank)}

    def __getstate__(self):   # the FAISS index is rebuilt where the rows are read (Ray tasks)
        return {**self.__dict__, "_index": None}
