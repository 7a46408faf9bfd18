"""Hierarchical balanced sampling (Vo et al., TMLR 2024, section 4): pick M keys spread evenly
over the top-level clusters, each cluster's share spread evenly over its children, down to the
leaves (level-1 clusters), where members are taken closest-to-centroid first or at random.

"Evenly" is water-filling: every child gets the same share, a child with fewer members than its
share gives the excess back to its siblings. Quotas cost O(K) in memory; choosing the members is
one streamed pass over the assignments keeping at most each leaf's quota of candidates, so the
caller holds O(M + K + batch) whatever N is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class SamplingConfig:
    size: int                   # M: keys to pick
    within_leaf: str = "closest"   # closest (highest confidence = nearest the centroid) | random
    seed: int = 0

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"curate: size must be >= 1, got {self.size}")
        if self.within_leaf not in ("closest", "random"):
            raise ValueError(f"curate: within_leaf must be closest or random, got {self.within_leaf!r}")


def water_fill(sizes: np.ndarray, total: int) -> np.ndarray:
    """Split `total` over groups of `sizes` (G,) as evenly as their sizes allow. Returns (G,) int64,
    each <= its size, summing to min(total, sizes.sum())."""
    sizes = np.asarray(sizes, dtype=np.int64)
    out = np.zeros(len(sizes), np.int64)
    left = min(int(total), int(sizes.sum()))
    while left > 0:
        open_ = np.flatnonzero(out < sizes)
        share = left // len(open_)
        if share == 0:   # fewer items left than open groups: one each to the largest remaining rooms
            order = open_[np.argsort(-(sizes[open_] - out[open_]), kind="stable")][:left]
            out[order] += 1
            break
        add = np.minimum(share, sizes[open_] - out[open_])
        out[open_] += add
        left -= int(add.sum())
    return out


def leaf_quotas(leaf_sizes: np.ndarray, parents: list[np.ndarray], total: int) -> np.ndarray:
    """Quota (K1,) of each leaf. leaf_sizes (K1,) members per level-1 cluster; parents[i] (K_{i+1},)
    the level-(i+2) cluster of each level-(i+1) cluster (empty list: a flat clustering)."""
    sizes = [np.asarray(leaf_sizes, np.int64)]
    for parent in parents:   # members per cluster at every level
        sizes.append(np.bincount(parent, weights=sizes[-1], minlength=int(parent.max()) + 1).astype(np.int64))
    quota = water_fill(sizes[-1], total)
    for level in range(len(parents) - 1, -1, -1):   # split each cluster's quota over its children
        parent, child_sizes = parents[level], sizes[level]
        child_quota = np.zeros(len(parent), np.int64)
        for cluster in np.flatnonzero(quota):
            children = np.flatnonzero(parent == cluster)
            child_quota[children] = water_fill(child_sizes[children], quota[cluster])
        quota = child_quota
    return quota


def level_columns(table_or_schema) -> list[str]:
    names = table_or_schema.names if hasattr(table_or_schema, "names") else table_or_schema.column_names
    return sorted((n for n in names if n.startswith("cluster_l")), key=lambda n: int(n[len("cluster_l"):]))


def tree_from_assignments(path: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """(leaf sizes (K1,), parents per level) read in batches from an assignments folder; a flat
    clustering (no cluster_l<i> columns) has no parents."""
    dataset = pq.ParquetDataset(path)
    columns = level_columns(dataset.schema) or ["cluster"]
    sizes, links = {}, [dict() for _ in columns[1:]]
    for fragment in dataset.fragments:
        for batch in fragment.to_batches(columns=columns):
            values = [batch.column(c).to_numpy() for c in columns]
            leaves, counts = np.unique(values[0], return_counts=True)
            for leaf, count in zip(leaves.tolist(), counts.tolist()):
                sizes[leaf] = sizes.get(leaf, 0) + count
            for i in range(1, len(values)):
                pairs = np.unique((values[i - 1].astype(np.int64) << 32) | values[i].astype(np.int64))
                for child, parent in zip((pairs >> 32).tolist(), (pairs & 0xFFFFFFFF).tolist()):
                    if links[i - 1].setdefault(child, parent) != parent:
                        raise ValueError(f"{path}: cluster {child} at level {i} has two parents")
    k1 = max(sizes) + 1
    leaf_sizes = np.zeros(k1, np.int64)
    leaf_sizes[list(sizes)] = list(sizes.values())
    parents, width = [], k1
    for link in links:
        parent = np.zeros(width, np.int64)
        parent[list(link)] = list(link.values())
        parents.append(parent)
        width = int(parent.max()) + 1
    return leaf_sizes, parents


def curate(assignments: str, config: SamplingConfig) -> pa.Table:
    """M keys chosen by hierarchical balanced sampling: key, cluster_l1..L (or cluster), plus
    confidence; one streamed pass over `assignments` (a folder of Parquet parts)."""
    from raycluster.data.rows import key_priority

    leaf_sizes, parents = tree_from_assignments(assignments)
    n = int(leaf_sizes.sum())
    if config.size > n:
        raise ValueError(f"curate: size={config.size} is more than the {n} rows in {assignments}")
    quota = leaf_quotas(leaf_sizes, parents, config.size)
    dataset = pq.ParquetDataset(assignments)
    columns = ["key", "cluster", "confidence", *level_columns(dataset.schema)]
    kept = None
    for fragment in dataset.fragments:
        for batch in fragment.to_batches(columns=columns):
            table = pa.Table.from_batches([batch])
            keys = np.asarray(table.column("key").to_pylist(), dtype=object)
            priority = (table.column("confidence").to_numpy().astype(np.float64) if config.within_leaf == "closest"
                        else key_priority(keys, config.seed))
            table = table.append_column("priority", pa.array(priority))
            kept = table if kept is None else pa.concat_tables([kept, table])
            kept = _top_per_leaf(kept, quota)
    return kept.drop(["priority"]).sort_by("key")


def _top_per_leaf(table: pa.Table, quota: np.ndarray) -> pa.Table:
    """Rows of `table` with the highest priority per leaf (`cluster`), at most quota[leaf] each."""
    leaf = table.column("cluster").to_numpy()
    priority = table.column("priority").to_numpy()
    order = np.lexsort((-priority, leaf))
    sorted_leaf = leaf[order]
    starts = np.searchsorted(sorted_leaf, sorted_leaf, side="left")
    rank = np.arange(len(order)) - starts
    return table.take(order[rank < quota[sorted_leaf]])


def write_curated(table: pa.Table, path: str) -> None:
    import io

    from raycluster.io import atomic_write_bytes

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue())

