"""k-NN graph of a whole embedding store, streamed through Ray Data against a sharded index.

    graph/part-<store part>.parquet   key (string), neighbors (list<string>), similarities (list<float32>)

Query batches stream from the store's part files through a searcher actor pool
(`map_batches`), which scatters each batch to the index shards and merges exactly; the driver
writes one output part per input part as soon as all its rows have arrived (atomically), so
memory stays flat as N grows and a rerun skips finished parts. A point is not its own
neighbour: each query asks for k + 1 and drops itself.
"""
from __future__ import annotations

import io
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raycluster.data.store import EmbeddingStore, embedding_matrix
from raycluster.io import atomic_write_bytes
from raycluster.neighbors.sharded import SEARCHER_CPUS, ShardedIndex, part_rows

log = logging.getLogger(__name__)


@dataclass
class GraphSummary:
    out_dir: str
    parts_total: int
    parts_skipped: int      # written by an earlier run
    parts_written: int
    rows: int               # queried in this run
    k: int
    seconds: float


class NeighborSearcher:
    """Ray Data callable: a batch of store rows -> their k nearest neighbours (self excluded)."""

    def __init__(self, index: ShardedIndex, k: int):
        self.index, self.k = index, k

    def __call__(self, batch: pa.Table) -> pa.Table:
        keys = np.asarray(batch.column("key").to_pylist(), dtype=object)
        scores, _, neighbor_keys = self.index.search(embedding_matrix(batch.column("embedding")), self.k + 1,
                                                     with_keys=True)
        keep = without_self(neighbor_keys, keys)
        neighbors = neighbor_keys[keep].reshape(len(keys), self.k)
        similarities = scores[keep].reshape(len(keys), self.k)
        return pa.table({
            "key": pa.array(keys.tolist(), pa.string()),
            "neighbors": pa.array(neighbors.tolist(), pa.list_(pa.string())),
            "similarities": pa.array(list(similarities.astype(np.float32)), pa.list_(pa.float32())),
            "path": batch.column("path"),
        })


def knn_table(index: ShardedIndex, vectors: np.ndarray, k: int, batch_size: int = 4096) -> np.ndarray:
    """(N, k) int64 global ids of each row's k nearest neighbours, itself excluded, for an index
    built over these same rows (`ShardedIndex.from_vectors`); in-memory, for training sets."""
    check_k(k, index.ntotal)
    table = np.empty((len(vectors), k), dtype=np.int64)
    for start in range(0, len(vectors), batch_size):
        _, ids = index.search(vectors[start:start + batch_size], k + 1)
        keep = without_self(ids, np.arange(start, start + len(ids)))
        table[start:start + len(ids)] = ids[keep].reshape(len(ids), k)
    return table


def neighbor_table(vectors: np.ndarray, k: int, spec, shards: int = 1, seed: int = 0) -> np.ndarray:
    """(N, D) float32 -> (N, k) int64 ids of each row's k nearest neighbours by cosine, itself
    excluded: a ShardedIndex of `shards` actors (`spec`: an IndexSpec) over the rows, searched
    with the same rows, then shut down. Starts local Ray when none is running."""
    from raycluster.ray_utils import ensure_ray

    check_k(k, len(vectors))
    ensure_ray(None, None)
    start = time.time()
    index = ShardedIndex.from_vectors(vectors, spec, shards, normalize=True, seed=seed)
    try:
        table = knn_table(index, vectors, k)
    finally:
        index.shutdown()
    log.info("%d-NN table of %d points in %.1fs (%s, %d shard(s))", k, len(vectors), time.time() - start,
             spec.kind, shards)
    return table


def without_self(found: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(n, k + 1) neighbour ids or keys of n queries and (n,) the queries' own -> (n, k + 1) bool
    mask keeping k per row: the query itself is dropped, or the last neighbour when the query is
    not in its list (exact duplicates can outrank it)."""
    not_self = found != np.asarray(own)[:, None]
    last_dropped = np.arange(found.shape[1]) < found.shape[1] - 1
    return np.where(not_self.all(axis=1, keepdims=True), last_dropped, not_self)


def check_k(k: int, ntotal: int) -> None:
    if k >= ntotal:
        raise ValueError(f"k={k} neighbours need at least k + 1 = {k + 1} indexed vectors, the index has {ntotal}")


def graph_part_name(part_path: str) -> str:
    return os.path.basename(part_path)


def build_knn_graph(store: EmbeddingStore, index: ShardedIndex, out_dir: str, k: int = 10,
                    batch_size: int = 4096, concurrency: int = 1) -> GraphSummary:
    """Write the k-NN graph of every store row not yet in `out_dir`; Ray must be running."""
    import ray.data

    check_k(k, index.ntotal)
    start = time.time()
    parts = part_rows(store)
    out_fs, out_path = fsspec.core.url_to_fs(out_dir)
    done = {os.path.basename(p) for p in out_fs.ls(out_path, detail=False)} if out_fs.isdir(out_path) else set()
    pending = [(path, count) for path, count in parts if graph_part_name(path) not in done]
    summary = GraphSummary(out_dir, len(parts), len(parts) - len(pending), 0, 0, k, 0.0)
    if not pending:
        log.info("k-NN graph: all %d parts already in %s", len(parts), out_dir)
        return summary
    log.info("k-NN graph: %d of %d parts to query (k=%d, %d shard(s))", len(pending), len(parts), k,
             len(index.shards))
    expected = {os.path.basename(path): count for path, count in pending}
    dataset = (store.ray_dataset([path for path, _ in pending], ["key", "embedding"], include_paths=True)
               .map_batches(NeighborSearcher, fn_constructor_args=(index, k), batch_size=batch_size,
                            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=concurrency),
                            num_cpus=SEARCHER_CPUS))
    buffers = defaultdict(list)
    seen = defaultdict(int)
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for name, rows in _split_by_part(batch).items():
            buffers[name].append(rows)
            seen[name] += len(rows)
            if seen[name] >= expected[name]:
                _write_part(out_dir, name, pa.concat_tables(buffers.pop(name)))
                summary.parts_written += 1
                summary.rows += seen[name]
    if buffers:
        raise RuntimeError(f"k-NN graph: {len(buffers)} part(s) ended incomplete: {sorted(buffers)[:3]}")
    summary.seconds = time.time() - start
    log.info("k-NN graph: %d rows in %.1fs -> %s", summary.rows, summary.seconds, out_dir)
    return summary


def _split_by_part(batch: pa.Table) -> dict[str, pa.Table]:
    names = np.asarray([os.path.basename(p) for p in batch.column("path").to_pylist()])
    out = {}
    for name in np.unique(names):
        out[str(name)] = batch.filter(pa.array(names == name)).drop_columns(["path"])
    return out


def _write_part(out_dir: str, name: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table.sort_by("key"), buffer)
    atomic_write_bytes(f"{out_dir.rstrip('/')}/{graph_part_name(name)}", buffer.getvalue())
    log.info("k-NN graph: wrote %s (%d rows)", name, len(table))


def read_graph(out_dir: str) -> pa.Table:
    """The whole graph as one table (small graphs, tests)."""
    fs, path = fsspec.core.url_to_fs(out_dir)
    files = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(fs.open(f, "rb")) for f in files])
