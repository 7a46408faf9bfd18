"""Semantic deduplication (NeMo Curator's SemDeDup route): within each level-1 cluster, pairwise
cosine similarity of L2-normalised embeddings; pairs at or above `threshold` are duplicates.
Groups are stars, not connected components: the row with the most duplicates (`keep=central`)
or the earliest key (`keep=earliest`) is kept and takes every not-yet-grouped row at or above
the threshold *to it*; repeat. Connected components chain (a ~ b ~ c without a ~ c): on
Tiny-ImageNet with injected copies they merged thousands of distinct photos into a few groups.

Restricting pairs to a cluster is what makes this scale: the cost is sum over clusters of
n_c^2 x D instead of N^2 x D, and each cluster is one Ray Data group (`groupby(...).map_groups`)
that fits one worker; a duplicate pair split across two clusters is missed (bench/curation.py
measures how many against the exact all-pairs search).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raycluster.data.store import unit_rows

BLOCK_ROWS = 4096


@dataclass
class DedupConfig:
    threshold: float = 0.95    # cosine similarity at or above which two images are duplicates
    keep: str = "central"      # central: the row with the most duplicates | earliest: the smallest key
    max_cluster_rows: int = 200_000   # a larger cluster is an error: it would not fit one worker's matmul

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"dedup: threshold must be in (0, 1], got {self.threshold}")
        if self.keep not in ("central", "earliest"):
            raise ValueError(f"dedup: keep must be central or earliest, got {self.keep!r}")


def similar_pairs(vectors: np.ndarray, threshold: float, block: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) -> row pairs (i, j), i < j, with cosine >= threshold; blocked matmul, O(block x n) memory."""
    unit = unit_rows(vectors)
    rows, cols = [], []
    for start in range(0, len(unit), block):
        sims = unit[start:start + block] @ unit.T
        i, j = np.nonzero(sims >= threshold - 1e-6)
        i += start
        upper = i < j
        rows.append(i[upper])
        cols.append(j[upper])
    return (np.concatenate(rows) if rows else np.zeros(0, np.int64)), (np.concatenate(cols) if cols else np.zeros(0, np.int64))


def duplicate_groups(keys: np.ndarray, vectors: np.ndarray, config: DedupConfig) -> dict:
    """One cluster's rows -> {"group" (n,) int64 (-1: no duplicate), "kept" (n,) bool}: star groups
    (see the module docstring), each a kept row plus the rows at or above the threshold to it."""
    from scipy.sparse import coo_matrix

    n = len(keys)
    if n > config.max_cluster_rows:
        raise ValueError(f"dedup: a cluster of {n} rows exceeds max_cluster_rows={config.max_cluster_rows}; "
                         "cluster with a larger k first")
    i, j = similar_pairs(vectors, config.threshold)
    group, kept = np.full(n, -1, np.int64), np.ones(n, bool)
    if not len(i):
        return {"group": group, "kept": kept}
    graph = coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    degree = np.diff(graph.indptr)
    candidates = np.flatnonzero(degree)
    if config.keep == "earliest":
        candidates = candidates[np.argsort(np.asarray(keys, dtype=object)[candidates], kind="stable")]
    else:   # the row with the most duplicates first: the centre of its group
        candidates = candidates[np.argsort(-degree[candidates], kind="stable")]
    for row in candidates:
        if group[row] >= 0:
            continue
        members = graph.indices[graph.indptr[row]:graph.indptr[row + 1]]
        members = members[group[members] < 0]
        if not len(members):
            continue
        group[row] = group[members] = row
        kept[members] = False
    return {"group": group, "kept": kept}


def dedup_table(keys: np.ndarray, cluster: np.ndarray, vectors: np.ndarray, config: DedupConfig) -> dict:
    """Rows with their level-1 cluster -> {"key", "cluster", "group", "kept"} with group ids unique
    across clusters (cluster x 2^32 + group within the cluster), -1 when the row has no duplicate."""
    order = np.argsort(cluster, kind="stable")
    keys, cluster, vectors = np.asarray(keys, dtype=object)[order], cluster[order], vectors[order]
    bounds = np.flatnonzero(np.diff(cluster)) + 1
    group, kept = np.full(len(keys), -1, np.int64), np.ones(len(keys), bool)
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(keys)]):
        found = duplicate_groups(keys[lo:hi], vectors[lo:hi], config)
        local = found["group"]
        group[lo:hi] = np.where(local >= 0, int(cluster[lo]) * 2**32 + local, -1)
        kept[lo:hi] = found["kept"]
    return {"key": keys, "cluster": cluster, "group": group, "kept": kept}


def _dedup_group(batch: dict, config: DedupConfig) -> dict:
    """Ray Data map_groups: one cluster's rows (key, cluster, vectors) -> key, cluster, group, kept."""
    return dedup_table(batch["key"], batch["cluster"], np.asarray(batch["vectors"], np.float32), config)


class _TagCluster:
    """Ray Data actor: store rows -> key, cluster (the run's fitted method), post-processed vectors."""

    def __init__(self, method, postprocess):
        self.method, self.postprocess = method, postprocess

    def __call__(self, batch):
        from raycluster.data.store import embedding_matrix

        vectors = self.postprocess(embedding_matrix(batch.column("embedding")))
        cluster, _ = self.method.predict(vectors)
        return {"key": np.asarray(batch.column("key").to_pylist(), dtype=object), "cluster": cluster, "vectors": vectors}


def dedup_rows(method, rows, config: DedupConfig):
    """Yield dedup_table results (dicts of arrays) over every row of a StoreRows, cluster by
    cluster: in-process for a small store, Ray Data groupby(cluster).map_groups otherwise."""
    if rows.local:
        data = rows.load()
        cluster, _ = method.predict(data.vectors)
        yield dedup_table(data.keys, cluster, data.vectors, config)
        return
    import ray.data

    dataset = (rows.store.ray_dataset(rows.parts, ["key", "embedding"])
               .map_batches(_TagCluster, fn_constructor_args=(method, rows.postprocess), batch_format="pyarrow",
                            batch_size=rows.batch_rows, compute=ray.data.ActorPoolStrategy(size=1))
               .groupby("cluster").map_groups(_dedup_group, fn_kwargs={"config": config}, batch_format="numpy"))
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
