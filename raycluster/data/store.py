"""Parquet embedding store: one part file per input shard, keyed by the sample's `__key__`.

    <root>/part-<shard stem>.parquet   columns: key (string), label (int64, -1 unknown),
                                       embedding (fixed_size_list<float32|float16>[D])
Part files carry their shard URL and sample/corrupt counts in the Parquet schema metadata, so
a rerun skips finished shards (`done_shards`) and a summary can count corrupt samples without
reading embeddings. Parts are written atomically (temp file + rename).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Optional

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raycluster.errors import EmbeddingWidthError
from raycluster.io import atomic_write_bytes, is_local


@dataclass
class Embeddings:
    """An in-memory view of a store. keys (N,) object str; labels (N,) int64, -1 = unknown;
    vectors (N, D) float32; parts (N,) int64 index into the store's part files, or None."""

    keys: np.ndarray
    labels: np.ndarray
    vectors: np.ndarray
    parts: Optional[np.ndarray] = None   # (N,) int: which store part each row came from, when known

    @property
    def has_labels(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())


def embedding_matrix(column) -> np.ndarray:
    """A fixed_size_list<float> Arrow column (N rows, Array or ChunkedArray) -> (N, D) float32
    (a read-only view of the Arrow buffer when it is float32 already)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(len(column), column.type.list_size), dtype=np.float32)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float32, each row divided by its L2 norm (all-zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return np.ascontiguousarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))


def part_name(shard_url: str) -> str:
    stem = os.path.basename(shard_url.rstrip("/"))
    return f"part-{stem[:-4] if stem.endswith('.tar') else stem}.parquet"


def embedding_table(keys, labels, vectors: np.ndarray, dtype: str = "float32") -> pa.Table:
    """(N,) keys, (N,) int64 labels, (N, D) floats -> Arrow table with a fixed-size-list column."""
    vectors = np.ascontiguousarray(vectors, dtype=np.dtype(dtype))
    flat = pa.array(vectors.reshape(-1))
    return pa.table({
        "key": pa.array(list(keys), pa.string()),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1] if vectors.ndim == 2 else 0),
    })


class EmbeddingStore:
    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.fs, self.path = fsspec.core.url_to_fs(self.root)

    def part_files(self) -> list[str]:
        if not self.fs.isdir(self.path):
            return []
        return sorted(p for p in self.fs.ls(self.path, detail=False)
                      if os.path.basename(p).startswith("part-") and p.endswith(".parquet"))

    def part_metadata(self, files: Optional[list[str]] = None) -> list[dict]:
        """Per part (of `files`, default all): {"shard", "samples", "corrupt", "dim", "shard_id"}
        from the Parquet footer only."""
        rows = []
        for path in self.part_files() if files is None else files:
            with self.fs.open(path, "rb") as handle:
                meta = pq.read_schema(handle).metadata or {}
            rows.append(json.loads(meta.get(b"raycluster", b"{}")))
        return rows

    def done_shards(self) -> dict[str, Optional[str]]:
        """Part file name (compare with `part_name(shard_url)`) -> the fingerprint of the shard it
        was made from (`shard_id`; None for parts written without one)."""
        files = self.part_files()
        return {os.path.basename(path): meta.get("shard_id") for path, meta in zip(files, self.part_metadata(files))}

    def content_fingerprint(self) -> dict:
        """What identifies the store's rows without reading them: the extractor fingerprint it
        was made with and, per part, its shard's fingerprint, size and mtime. Artifacts built
        from a store (an index, a graph) record this and are rebuilt when it changes."""
        from raycluster.fingerprint import file_identities, read_fingerprint

        record = read_fingerprint(self.root) or {}
        files = self.part_files()
        local = [f"{self.root}/{os.path.basename(path)}" for path in files]
        identities = file_identities(local) if local else {}
        return {"extractor": record.get("fingerprint"),
                "parts": {os.path.basename(url): {**identity, "shard_id": meta.get("shard_id")}
                          for (url, identity), meta in zip(identities.items(), self.part_metadata(files))}}

    def remove_parts(self, names: list[str]) -> None:
        if names:
            self.fs.rm([f"{self.path}/{name}" for name in names])

    def write_part(self, shard_url: str, keys, labels, vectors: np.ndarray, corrupt: int = 0,
                   dtype: str = "float32", from_shard: bool = True, shard_id: Optional[str] = None) -> str:
        """Write one shard's embeddings atomically; returns the part's path. shard_id: the
        fingerprint of the shard's file (a rerun re-embeds the shard when it differs).
        from_shard=False: the vectors came from elsewhere (imported features); `shard_url` only
        names the part and no shard is recorded (so no images can be read back for these keys)."""
        table = embedding_table(keys, labels, vectors, dtype)
        info = {"shard": shard_url if from_shard else None, "samples": len(keys) + corrupt, "corrupt": corrupt,
                "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0, "shard_id": shard_id}
        table = table.replace_schema_metadata({b"raycluster": json.dumps(info).encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        target = f"{self.root}/{part_name(shard_url)}"
        atomic_write_bytes(target, buffer.getvalue())
        return target

    def ray_dataset(self, parts: list[str], columns: list[str], include_paths: bool = False):
        """ray.data.Dataset over some of this store's part files (local paths made absolute, so
        workers anywhere read the same files)."""
        import ray.data

        local = is_local(self.fs)
        return ray.data.read_parquet([os.path.abspath(p) if local else p for p in parts], columns=columns,
                                     include_paths=include_paths, filesystem=None if local else self.fs)

    def load(self, expected_dim: Optional[int] = None) -> Embeddings:
        """Read every part into memory, sorted by key. Raises EmbeddingWidthError on a width
        other than `expected_dim`, FileNotFoundError on an empty store."""
        files = self.part_files()
        if not files:
            raise FileNotFoundError(f"embedding store {self.root!r} has no part files; run jobs/extract.py first")
        tables = []
        for path in files:
            with self.fs.open(path, "rb") as handle:
                table = pq.read_table(handle, columns=["key", "label", "embedding"])
            if table.schema.metadata:
                table = table.replace_schema_metadata(None)
            tables.append(table)
        dims = {t.schema.field("embedding").type.list_size for t in tables}
        if len(dims) > 1:
            raise EmbeddingWidthError(f"parts in {self.root!r} disagree on embedding width: {sorted(dims)}")
        float32 = pa.list_(pa.float32(), dims.pop())
        table = pa.concat_tables([t.set_column(2, "embedding", t.column("embedding").cast(float32)) for t in tables])
        table = table.sort_by("key")
        dim = table.schema.field("embedding").type.list_size
        if expected_dim is not None and dim != expected_dim:
            raise EmbeddingWidthError(f"embeddings in {self.root!r} have width {dim}, expected {expected_dim}")
        vectors = embedding_matrix(table.column("embedding")).copy()   # writable, owned by numpy
        return Embeddings(np.asarray(table.column("key").to_pylist(), dtype=object),
                          table.column("label").to_numpy(), vectors)


def write_assignments(path: str, keys, cluster: np.ndarray, confidence: np.ndarray) -> None:
    """Assignments Parquet (key string, cluster int64, confidence float32), written atomically."""
    table = pa.table({"key": pa.array(list(keys), pa.string()),
                      "cluster": pa.array(np.asarray(cluster, dtype=np.int64)),
                      "confidence": pa.array(np.asarray(confidence, dtype=np.float32))})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue())
