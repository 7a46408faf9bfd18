"""StoreRows: an embedding store seen through its post-processing, read in bounded pieces.

Everything after extraction reads rows through this class, never the whole matrix at once:

    rows.n_rows, rows.dim                      from Parquet footers (no row is read)
    rows.sample(n, seed)                       ~n rows chosen by a hash of their key: the same rows
                                               whichever process asks, in any order of parts
    rows.map(fn, ...)                          fn(key, label, vectors) on every batch, results yielded
    rows.training_data(fn, ...)                a Ray Dataset of the rows (fn's columns), read from the
                                               store by the Ray Train workers that split it
    rows.load()                                every row (for methods that fit in memory; they run in
                                               a Ray task, not in the driver)

`ArrayRows` gives an in-memory (N, D) array the same reading interface (benches and tests fit
the streamed methods on arrays through it).

`map` runs in the calling process when the store is small (under `local_bytes`: start-up of a
Ray Data pipeline would cost more than the pass) and as Ray Data tasks otherwise; either way
the caller holds one batch's results at a time.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import numpy as np
import pyarrow.parquet as pq

from raycluster.data.store import EmbeddingStore, Embeddings, EmbeddingWidthError, embedding_matrix
from raycluster.data.postprocess import Postprocess

LOCAL_BYTES = 256 << 20   # stores up to this size stream in-process (the embedded default does)
BATCH_ROWS = 16384


def key_hash(keys, seed: int = 0) -> np.ndarray:
    """(n,) uint64: a keyed hash of each key (SipHash via pandas), the same in every process."""
    import pandas as pd

    return pd.util.hash_array(np.asarray(keys, dtype=object), hash_key=f"raycluster{seed:06d}"[:16])


def key_priority(keys, seed: int = 0) -> np.ndarray:
    """(n,) float64 in [0, 1): a random but reproducible priority per key."""
    return key_hash(keys, seed).astype(np.float64) / 2.0 ** 64


def in_sample(keys, fraction: float, seed: int = 0) -> np.ndarray:
    """(n,) bool: whether each key is in the `fraction` sample of `seed` (its `key_hash` below
    fraction x 2^64), so any process picks the same rows without coordination."""
    if fraction >= 1.0:
        return np.ones(len(keys), dtype=bool)
    return key_hash(keys, seed) < np.uint64(min(fraction, 1.0) * float(2 ** 64 - 1))


@dataclass
class StoreRows:
    store: EmbeddingStore
    postprocess: Postprocess = field(default_factory=Postprocess)
    local_bytes: int = LOCAL_BYTES
    batch_rows: int = BATCH_ROWS

    def __post_init__(self):
        self.parts = self.store.part_files()
        if not self.parts:
            raise FileNotFoundError(f"embedding store {self.store.root!r} has no part files")
        footers = []
        for path in self.parts:
            with self.store.fs.open(path, "rb") as handle:
                footers.append(pq.read_metadata(handle))
        self.part_rows = [f.num_rows for f in footers]
        widths = {f.schema.to_arrow_schema().field("embedding").type.list_size for f in footers}
        if len(widths) > 1:
            raise EmbeddingWidthError(f"parts in {self.store.root!r} disagree on embedding width: {sorted(widths)}")
        self.stored_dim = widths.pop()
        self.bytes = sum(f.serialized_size + sum(f.row_group(i).total_byte_size for i in range(f.num_row_groups))
                         for f in footers)

    @property
    def n_rows(self) -> int:
        return int(sum(self.part_rows))

    @property
    def dim(self) -> int:
        return self.postprocess.out_dim or self.stored_dim

    @property
    def local(self) -> bool:
        return self.bytes <= self.local_bytes

    def with_postprocess(self, postprocess: Postprocess) -> "StoreRows":
        rows = StoreRows.__new__(StoreRows)
        rows.__dict__.update(self.__dict__, postprocess=postprocess)
        return rows

    # -- reading ---------------------------------------------------------------------------
    def _local_batches(self) -> Iterator[tuple]:
        for index, path in enumerate(self.parts):
            with self.store.fs.open(path, "rb") as handle:
                for batch in pq.ParquetFile(handle).iter_batches(self.batch_rows, columns=["key", "label", "embedding"]):
                    yield (np.asarray(batch.column("key").to_pylist(), dtype=object), batch.column("label").to_numpy(),
                           embedding_matrix(batch.column("embedding")), np.full(batch.num_rows, index, np.int64))

    def _part_index(self) -> dict:
        """{file name of a part: its index}, to tell rows of a Ray Data read apart by path."""
        return {os.path.basename(path): index for index, path in enumerate(self.parts)}

    def map(self, fn: Callable, fn_kwargs: Optional[dict] = None, num_cpus: float = 1.0,
            with_parts: bool = False) -> Iterator:
        """Yield fn(keys (n,) object, labels (n,) int64, vectors (n, dim) float32, **fn_kwargs)
        for every batch of the store, post-processed; with with_parts=True fn also gets parts
        (n,) int64, each row's index into `self.parts`. fn's result must be a dict of numpy
        arrays (Ray Data moves it between processes)."""
        if self.local:
            for keys, labels, vectors, parts in self._local_batches():
                extra = {"parts": parts} if with_parts else {}
                yield fn(keys, labels, self.postprocess(vectors), **extra, **(fn_kwargs or {}))
            return
        yield from self.dataset(fn, fn_kwargs, num_cpus, with_parts).iter_batches(batch_size=None, batch_format="numpy")

    def dataset(self, fn: Callable, fn_kwargs: Optional[dict] = None, num_cpus: float = 1.0, with_parts: bool = False):
        """The lazy Ray Dataset behind `map` (same fn and arguments), for a caller that goes on in
        Ray Data (a groupby, a write) instead of iterating the batches."""
        return self.store.ray_dataset(self.parts, ["key", "label", "embedding"], include_paths=with_parts).map_batches(
            _apply, fn_kwargs={"fn": fn, "postprocess": self.postprocess, "fn_kwargs": fn_kwargs or {},
                               "part_index": self._part_index() if with_parts else None},
            batch_size=self.batch_rows, batch_format="pyarrow", num_cpus=num_cpus)

    def sample(self, n: int, seed: int = 0) -> Embeddings:
        """~n rows (every row when n >= n_rows), post-processed, sorted by key. The rows are those
        whose key hash falls in the first n / n_rows of the hash range (`in_sample`)."""
        fraction = min(1.0, n / max(self.n_rows, 1))
        keys, labels, vectors, parts = [], [], [], []
        for batch in self.map(_take_sample, {"fraction": fraction, "seed": seed}, with_parts=True):
            keys.append(np.asarray(batch["key"], dtype=object))
            labels.append(batch["label"])
            vectors.append(batch["vectors"])
            parts.append(batch["parts"])
        if not keys or not sum(map(len, keys)):
            raise ValueError(f"a sample of {n} of {self.n_rows} rows in {self.store.root!r} came out empty")
        keys = np.concatenate(keys)
        order = np.argsort(keys, kind="stable")
        return Embeddings(keys[order], np.concatenate(labels)[order],
                          np.ascontiguousarray(np.concatenate(vectors)[order], dtype=np.float32),
                          np.concatenate(parts)[order])

    def load(self) -> Embeddings:
        """Every row, post-processed, sorted by key: O(N x D) in the calling process."""
        return self.sample(self.n_rows)

    def fingerprint(self) -> dict:
        """What identifies the rows as a method sees them, without reading them."""
        return {"store": self.store.content_fingerprint(), "postprocess": self.postprocess.fingerprint()}

    def training_data(self, fn: Optional[Callable] = None, fn_kwargs: Optional[dict] = None) -> "TrainingData":
        """The rows as a lazy Ray Dataset for Ray Train: the workers that split it read the store's
        parts themselves (nothing passes through the caller). Columns: what
        fn(keys, vectors, **fn_kwargs) returns (a dict with at least `features`; default: the
        post-processed vectors), `label`, and `order` (a hash of the key, for a stable row order)."""
        fn_kwargs = fn_kwargs or {}
        dataset = self.store.ray_dataset(self.parts, ["key", "label", "embedding"]).map_batches(
            _training_batch, fn_kwargs={"fn": fn, "fn_kwargs": fn_kwargs, "postprocess": self.postprocess},
            batch_size=self.batch_rows, batch_format="pyarrow")
        return TrainingData(dataset, {"rows": self.fingerprint(), **_columns_fingerprint(fn, fn_kwargs)})


@dataclass
class TrainingData:
    """What Ray Train workers split (`raycluster.train.run`): a Ray Dataset with columns
    `features` (tensor), `label` and either `index` (dataset-wide row id) or `order` (a stable
    sort key), plus per-row columns a model takes; and what identifies its rows (a checkpoint's
    fingerprint)."""

    dataset: object
    fingerprint: dict


@dataclass
class ArrayRows:
    """An in-memory (N, D) float32 array with StoreRows' reading interface (n_rows, dim, sample,
    load, training_data, fingerprint); keys are row positions. labels (N,) int64, -1 unknown."""

    vectors: np.ndarray
    labels: Optional[np.ndarray] = None

    def __post_init__(self):
        self.vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
        self.labels = (np.full(len(self.vectors), -1, np.int64) if self.labels is None
                       else np.asarray(self.labels, np.int64))

    @property
    def n_rows(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def sample(self, n: int, seed: int = 0) -> Embeddings:
        """The rows StoreRows.sample would pick were the keys the row positions, in row order."""
        keys = np.arange(self.n_rows)
        keep = in_sample(keys.astype(object), min(1.0, n / max(self.n_rows, 1)), seed)
        return Embeddings(keys[keep].astype(object), self.labels[keep], self.vectors[keep])

    def load(self) -> Embeddings:
        return self.sample(self.n_rows)

    def fingerprint(self) -> dict:
        from raycluster.fingerprint import array_fingerprint

        return {"rows": array_fingerprint(self.vectors)}

    def training_data(self, fn: Optional[Callable] = None, fn_kwargs: Optional[dict] = None) -> TrainingData:
        """A Ray Dataset of the array (fn's columns, `label`, `index` = row position)."""
        import pyarrow as pa
        import ray.data
        from ray.data.extensions import ArrowTensorArray

        fn_kwargs = fn_kwargs or {}
        columns = fn(np.arange(self.n_rows).astype(object), self.vectors, **fn_kwargs) if fn else {
            "features": self.vectors}
        table = {name: ArrowTensorArray.from_numpy(np.ascontiguousarray(value)) if np.ndim(value) > 1
                 else pa.array(value) for name, value in columns.items()}
        table.update(label=pa.array(self.labels), index=pa.array(np.arange(self.n_rows)))
        return TrainingData(ray.data.from_arrow(pa.table(table)),
                            {**self.fingerprint(), **_columns_fingerprint(fn, fn_kwargs)})


def _columns_fingerprint(fn: Optional[Callable], fn_kwargs: dict) -> dict:
    """The function that makes a training dataset's columns, and its arguments: arrays by
    content, a Postprocess (or anything with a `fingerprint()`) by its own, a fitted method by
    its `fitted_state()`."""
    from raycluster.fingerprint import array_fingerprint

    def identity(value):
        if isinstance(value, np.ndarray):
            return array_fingerprint(value)
        if callable(getattr(value, "fingerprint", None)):   # Postprocess, BankNeighbors
            return value.fingerprint()
        if hasattr(value, "fitted_state"):   # a fitted clustering method (raycluster.methods)
            arrays, values = value.fitted_state()
            return {"class": type(value).__qualname__, **values,
                    **{name: array_fingerprint(array) for name, array in arrays.items()}}
        return value

    if fn is None:
        return {}
    return {"columns": f"{fn.__module__}.{fn.__qualname__}",
            "arguments": {name: identity(value) for name, value in fn_kwargs.items()}}


def _training_batch(batch, fn: Optional[Callable], fn_kwargs: dict, postprocess: Postprocess) -> dict:
    """Ray Data batch (pyarrow) of the store -> the training dataset's columns."""
    keys, labels, vectors = _decoded(batch, postprocess)
    columns = fn(keys, vectors, **fn_kwargs) if fn else {"features": vectors}
    return {**columns, "label": labels, "order": key_hash(keys)}


def _take_sample(keys, labels, vectors, parts, fraction: float, seed: int) -> dict:
    keep = in_sample(keys, fraction, seed)
    return {"key": keys[keep], "label": labels[keep], "vectors": vectors[keep], "parts": parts[keep]}


def _apply(batch, fn, postprocess: Postprocess, fn_kwargs: dict, part_index: Optional[dict] = None) -> dict:
    """Ray Data batch (pyarrow) -> fn's dict of arrays."""
    keys, labels, vectors = _decoded(batch, postprocess)
    extra = {}
    if part_index is not None:
        extra["parts"] = np.array([part_index[os.path.basename(p)] for p in batch.column("path").to_pylist()], np.int64)
    return fn(keys, labels, vectors, **extra, **fn_kwargs)


def _decoded(batch, postprocess: Postprocess) -> tuple:
    """A Ray Data batch (pyarrow) of the store -> keys (n,) object, labels (n,) int64, and the
    post-processed vectors (n, dim) float32."""
    return (np.asarray(batch.column("key").to_pylist(), dtype=object), batch.column("label").to_numpy(),
            postprocess(embedding_matrix(batch.column("embedding"))))


def store_rows(root: str, postprocess: Optional[Postprocess] = None, local_bytes: Optional[int] = None) -> StoreRows:
    """StoreRows over the store at `root` (local path or fsspec URL)."""
    rows = StoreRows(EmbeddingStore(root), postprocess or Postprocess())
    if local_bytes is not None:
        rows.local_bytes = local_bytes
    return rows

