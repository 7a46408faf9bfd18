"""Assign every row of a store with a fitted method, streamed: assignment parts + summed counts.

    stats, picked = assign_rows(method, rows, out_dir, pick_fraction=f, seed=s)

Rows stream through the method (in-process for small stores, a Ray Data actor pool otherwise);
the caller holds one batch at a time plus:
- `AssignmentStats`: cluster sizes, a (clusters x classes) count table, a confidence histogram,
  all O(K x C), so sizes, ACC/NMI/ARI and size entropy are exact for any N;
- `picked`: cluster and confidence of the rows in the `in_sample(key, f, seed)` sample, the same
  rows `StoreRows.sample` returns, so the report and label-free metrics join them by key.

Output: `out_dir` is a folder of Parquet parts (key string, cluster int64, confidence float32,
label int64 with -1 = unknown), readable as one table by `pyarrow.parquet.read_table(out_dir)`
or pandas; built under a temporary name and renamed into place when complete.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raycluster.data.rows import StoreRows, in_sample
from raycluster.data.store import embedding_matrix
from raycluster.metrics import count_entropy, table_metrics
from raycluster.data.postprocess import Postprocess

log = logging.getLogger(__name__)

CONFIDENCE_BINS = 50
ROWS_PER_PART = 1_000_000


@dataclass
class AssignmentStats:
    """Counts over every assigned row. sizes (K,) int64; table (K, C) int64 over rows with a
    label; confidence_hist (CONFIDENCE_BINS,) int64 over [0, 1]; confidence_sum (K,) float64."""

    n_clusters: int
    sizes: np.ndarray = None
    table: np.ndarray = None
    confidence_hist: np.ndarray = None
    confidence_sum: np.ndarray = None
    unlabelled: int = 0

    def __post_init__(self):
        k = self.n_clusters
        self.sizes = np.zeros(k, np.int64) if self.sizes is None else self.sizes
        self.table = np.zeros((k, 0), np.int64) if self.table is None else self.table
        self.confidence_hist = np.zeros(CONFIDENCE_BINS, np.int64) if self.confidence_hist is None else self.confidence_hist
        self.confidence_sum = np.zeros(k, np.float64) if self.confidence_sum is None else self.confidence_sum

    @property
    def rows(self) -> int:
        return int(self.sizes.sum())

    @property
    def has_labels(self) -> bool:
        return self.rows > 0 and self.unlabelled == 0

    def update(self, cluster: np.ndarray, confidence: np.ndarray, labels: np.ndarray) -> None:
        k = self.n_clusters
        if len(cluster) and (cluster.min() < 0 or cluster.max() >= k):
            raise ValueError(f"a method assigned cluster ids outside [0, {k})")
        self.sizes += np.bincount(cluster, minlength=k)
        self.confidence_sum += np.bincount(cluster, weights=confidence, minlength=k)
        bins = np.clip((np.asarray(confidence) * CONFIDENCE_BINS).astype(np.int64), 0, CONFIDENCE_BINS - 1)
        self.confidence_hist += np.bincount(bins, minlength=CONFIDENCE_BINS)
        known = labels >= 0
        self.unlabelled += int((~known).sum())
        if known.any():
            classes = max(self.table.shape[1], int(labels[known].max()) + 1)
            if classes > self.table.shape[1]:
                self.table = np.pad(self.table, ((0, 0), (0, classes - self.table.shape[1])))
            np.add.at(self.table, (cluster[known], labels[known]), 1)

    def metrics(self) -> dict:
        """size_entropy, clusters_used, mean_confidence; acc, nmi, ari when every row has a label."""
        out = {"size_entropy": count_entropy(self.sizes, self.n_clusters),
               "clusters_used": int((self.sizes > 0).sum()),
               "mean_confidence": float(self.confidence_sum.sum() / max(self.rows, 1))}
        if self.has_labels:
            out.update(table_metrics(self.table))
        return out


class Tally:
    """AssignmentStats plus the cluster and confidence of the rows in the `pick_fraction` sample."""

    def __init__(self, n_clusters: int, pick_fraction: float, seed: int):
        self.stats, self.pick_fraction, self.seed = AssignmentStats(n_clusters), pick_fraction, seed
        self.picked = {"key": [], "cluster": [], "confidence": []}

    def add(self, table: pa.Table) -> None:
        """table: key, cluster, confidence and (optional) label columns."""
        cluster, confidence = table.column("cluster").to_numpy(), table.column("confidence").to_numpy()
        labels = table.column("label").to_numpy() if "label" in table.column_names else np.full(len(cluster), -1)
        self.stats.update(cluster, confidence, labels)
        if self.pick_fraction > 0:
            keys = np.asarray(table.column("key").to_pylist(), dtype=object)
            keep = in_sample(keys, self.pick_fraction, self.seed)
            for name, values in (("key", keys), ("cluster", cluster), ("confidence", confidence)):
                self.picked[name].append(values[keep])

    def result(self) -> tuple[AssignmentStats, dict]:
        return self.stats, {name: np.concatenate(parts) if parts else np.zeros(0)
                            for name, parts in self.picked.items()}


@runtime_checkable
class HasLevels(Protocol):
    """A method whose clusters form a tree (hkmeans): every level's cluster per row, and
    `parents[i]` (K_{i+1},) int64, the level-(i+2) cluster of each level-(i+1) cluster."""

    parents: list

    def predict_levels(self, vectors: np.ndarray) -> np.ndarray: ...


def level_counts(stats: AssignmentStats, parents: list) -> list[dict]:
    """Per level above 1: {"sizes" (K_i,), "table" (K_i, C) or None, "parent" (K_{i-1},)}, summed
    up the tree from the level-1 counts (no pass over the rows)."""
    out, sizes, table = [], stats.sizes, stats.table if stats.has_labels else None
    for parent in parents:
        k = int(parent.max()) + 1
        sizes = np.bincount(parent, weights=sizes, minlength=k).astype(np.int64)
        if table is not None:
            summed = np.zeros((k, table.shape[1]), np.int64)
            np.add.at(summed, parent, table)
            table = summed
        out.append({"sizes": sizes, "table": table, "parent": parent})
    return out


class AssignmentWriter:
    """Parquet parts of at most `rows_per_part` rows in a temporary folder, renamed to `out_dir`
    on `close()` (the old folder or file is removed only after). Columns: key string, cluster
    int64, confidence float32, label int64, then any cluster_l<i> int64."""

    def __init__(self, out_dir: str, rows_per_part: int = ROWS_PER_PART):
        self.out_dir, self.rows_per_part = out_dir.rstrip("/"), rows_per_part
        self.temp = f"{self.out_dir}.tmp-{uuid.uuid4().hex[:8]}"
        os.makedirs(self.temp)
        self.writer, self.parts, self.in_part = None, 0, 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None or self.in_part >= self.rows_per_part:
            self._close_part()
            self.schema = pa.schema([(name, {"key": pa.string(), "confidence": pa.float32()}.get(name, pa.int64()))
                                     for name in table.column_names])
            self.writer = pq.ParquetWriter(os.path.join(self.temp, f"part-{self.parts:05d}.parquet"), self.schema)
            self.parts += 1
        self.writer.write_table(table.cast(self.schema))
        self.in_part += table.num_rows

    def _close_part(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer, self.in_part = None, 0

    def close(self) -> None:
        self._close_part()
        old = None
        if os.path.exists(self.out_dir):
            old = f"{self.out_dir}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out_dir, old)
        os.replace(self.temp, self.out_dir)
        if old:
            shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)

    def abort(self) -> None:
        self._close_part()
        shutil.rmtree(self.temp, ignore_errors=True)


class Predictor:
    """Ray Data actor (and the in-process loop): a batch of store rows -> key, cluster,
    confidence, label. The method and post-processing arrive once per actor."""

    def __init__(self, method, postprocess: Postprocess):
        self.method, self.postprocess = method, postprocess

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = self.postprocess(embedding_matrix(batch.column("embedding")))
        cluster, confidence = self.method.predict(vectors)
        columns = {"key": batch.column("key"), "cluster": pa.array(np.asarray(cluster, np.int64)),
                   "confidence": pa.array(np.asarray(confidence, np.float32)), "label": batch.column("label")}
        if isinstance(self.method, HasLevels):   # a hierarchy: one column per level, level 1 first
            levels = self.method.predict_levels(vectors)
            columns.update({f"cluster_l{i + 1}": pa.array(levels[:, i]) for i in range(levels.shape[1])})
        return pa.table(columns)


@dataclass
class PoolSettings:
    """Where prediction runs when the store is not small: an actor pool of `concurrency` actors."""

    batch_size: int = 8192
    concurrency: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    extra: dict = field(default_factory=dict)


def predicted_batches(method, rows: StoreRows, pool: PoolSettings = PoolSettings()):
    """Yield pyarrow tables (key, cluster, confidence, label) covering every row once."""
    predictor = Predictor(method, rows.postprocess)
    if rows.local:
        for path in rows.parts:
            with rows.store.fs.open(path, "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(pool.batch_size, columns=["key", "label", "embedding"]):
                    yield predictor(pa.Table.from_batches([batch]))
        return
    import ray.data

    dataset = rows.store.ray_dataset(rows.parts, ["key", "label", "embedding"]).map_batches(
        Predictor, fn_constructor_args=(method, rows.postprocess), batch_size=pool.batch_size,
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=pool.concurrency), num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus)
    yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")


def assign_rows(method, rows: StoreRows, out_dir: str, pick_fraction: float = 0.0, seed: int = 0,
                pool: PoolSettings = PoolSettings()) -> tuple[AssignmentStats, dict]:
    """Predict every row, write `out_dir` (see module doc), return (stats, picked) where picked =
    {"key" (m,) object, "cluster" (m,) int64, "confidence" (m,) float32} for the sampled keys."""
    start = time.time()
    tally = Tally(method.n_clusters, pick_fraction, seed)
    writer = AssignmentWriter(out_dir)
    try:
        for table in predicted_batches(method, rows, pool):
            writer.write(table)
            tally.add(table)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    stats, picked = tally.result()
    if stats.rows != rows.n_rows:
        raise RuntimeError(f"assigned {stats.rows} rows of {rows.n_rows} in {rows.store.root!r}")
    log.info("assigned %d rows in %d part(s) -> %s (%.1fs)", stats.rows, writer.parts, out_dir, time.time() - start)
    return stats, picked


def read_assignment_stats(path: str, n_clusters: int, pick_fraction: float = 0.0, seed: int = 0,
                          batch_rows: int = 1 << 20) -> tuple[AssignmentStats, dict]:
    """The same (stats, picked) as `assign_rows`, read back from an assignments folder (or an
    older single file) in batches; rows without a label column count as unlabelled."""
    tally = Tally(n_clusters, pick_fraction, seed)
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".parquet")) \
        if os.path.isdir(path) else [path]
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_rows):
            tally.add(pa.Table.from_batches([batch]))
    return tally.result()
