"""A FAISS index split over Ray actors: each actor owns one shard (a partition of the store's
part files), searches are scattered to every shard and the per-shard top-k merged exactly.

    index = ShardedIndex.build(store, IndexSpec(kind="ivf_flat"), num_shards=2)
    scores, ids = index.search(queries, k=10)      # ids: global row ids (see `row_keys`)
    index.save("s3://bucket/index")  /  ShardedIndex.load("s3://bucket/index")

Global row ids number the store's rows in part-file order (part 0's rows first). Vectors are
added in streaming batches that each actor reads itself from its parts, so no process ever
holds more than one part plus its own shard.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Optional

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raycluster.data.store import EmbeddingStore, embedding_matrix, unit_rows
from raycluster.io import atomic_write_bytes
from raycluster.neighbors.index import (IndexSpec, build_index, check_width, deserialize, merge_topk, serialize,
                                        set_search_params, to_device)

log = logging.getLogger(__name__)

MANIFEST = "index.json"
SEARCHER_CPUS = 0.25   # a graph searcher actor mostly waits on the shards


def part_rows(store: EmbeddingStore) -> list[tuple[str, int]]:
    """[(part path, row count)] in part order, from Parquet footers only."""
    rows = []
    for path in store.part_files():
        with store.fs.open(path, "rb") as handle:
            rows.append((path, pq.read_metadata(handle).num_rows))
    return rows


def read_vectors(store: EmbeddingStore, path: str, normalize: bool) -> tuple[list[str], np.ndarray]:
    """One part -> (keys, (n, D) float32 vectors), unit-norm if `normalize`."""
    with store.fs.open(path, "rb") as handle:
        table = pq.read_table(handle, columns=["key", "embedding"])
    vectors = embedding_matrix(table.column("embedding"))
    return table.column("key").to_pylist(), unit_rows(vectors) if normalize else vectors


def sample_rows(store: EmbeddingStore, parts: list[tuple[str, int]], size: int, normalize: bool,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """min(size, N) rows drawn uniformly, reading one part at a time: (sorted global row ids
    int64, (n, D) float32 vectors). Global ids number rows in part order, as in `ShardedIndex`."""
    total = sum(count for _, count in parts)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(size, total), replace=False))
    picked, offset = [], 0
    for path, count in parts:
        local = chosen[(chosen >= offset) & (chosen < offset + count)] - offset
        if len(local):
            picked.append(read_vectors(store, path, normalize)[1][local])
        offset += count
    return chosen.astype(np.int64), np.concatenate(picked)


class IndexShard:
    """One shard: a FAISS index plus the global ids and keys of its rows (a Ray actor)."""

    def __init__(self, spec: IndexSpec, threads: Optional[int] = None):
        import faiss

        if threads:
            faiss.omp_set_num_threads(int(threads))
        self.spec, self.index = spec, None
        self.ids, self.keys = np.zeros(0, np.int64), np.zeros(0, object)  # row i of the index

    def set_index(self, data: bytes) -> int:
        """Install a (trained, empty or filled) serialized index; returns its dimension."""
        self.index = to_device(deserialize(data), self.spec)
        set_search_params(self.index, self.spec)
        return self.index.d

    def add_parts(self, store_root: str, parts: list[tuple[str, int]], normalize: bool, batch: int = 65536) -> int:
        """Add the rows of `parts` [(path, first global id)], one part at a time; returns ntotal."""
        store = EmbeddingStore(store_root)
        ids, all_keys = [self.ids], [self.keys]
        for path, first_id in parts:
            keys, vectors = read_vectors(store, path, normalize)
            check_width(vectors, self.index.d, f"embeddings in {path}")
            for start in range(0, len(vectors), batch):
                self.index.add(vectors[start:start + batch])
            ids.append(np.arange(first_id, first_id + len(keys), dtype=np.int64))
            all_keys.append(np.asarray(keys, dtype=object))
        self.ids, self.keys = np.concatenate(ids), np.concatenate(all_keys)
        return int(self.index.ntotal)

    def add_array(self, vectors: np.ndarray, first_id: int, batch: int = 65536) -> int:
        """Add in-memory rows (already normalised if wanted) with global ids first_id...; keys are
        the ids as strings. Returns ntotal."""
        check_width(vectors, self.index.d, "vectors")
        for start in range(0, len(vectors), batch):
            self.index.add(np.ascontiguousarray(vectors[start:start + batch], dtype=np.float32))
        ids = np.arange(first_id, first_id + len(vectors), dtype=np.int64)
        self.ids = np.concatenate([self.ids, ids])
        self.keys = np.concatenate([self.keys, np.asarray([str(i) for i in ids], dtype=object)])
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int, with_keys: bool = False):
        """(nq, D) float32 -> (nq, min(k, ntotal)) scores float32, global ids int64 (and keys,
        an object array, when `with_keys`)."""
        scores, local = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.index.ntotal))
        ids = np.where(local >= 0, self.ids[np.maximum(local, 0)], -1)
        if not with_keys:
            return scores, ids
        return scores, ids, np.where(local >= 0, self.keys[np.maximum(local, 0)], None)

    def ntotal(self) -> int:
        return int(self.index.ntotal) if self.index is not None else 0

    def save(self, url: str) -> None:
        """Index bytes to `url`.faiss and ids + keys to `url`.keys.parquet, each atomically."""
        atomic_write_bytes(f"{url}.faiss", serialize(self.index))
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"id": self.ids, "key": pa.array(list(self.keys), pa.string())}), sink)
        atomic_write_bytes(f"{url}.keys.parquet", sink.getvalue().to_pybytes())

    def load(self, url: str) -> int:
        with fsspec.open(f"{url}.faiss", "rb") as handle:
            self.set_index(handle.read())
        with fsspec.open(f"{url}.keys.parquet", "rb") as handle:
            table = pq.read_table(handle)
        self.ids = table.column("id").to_numpy()
        self.keys = np.asarray(table.column("key").to_pylist(), dtype=object)
        return self.ntotal()


class ShardedIndex:
    """Driver-side handle: N `IndexShard` actors and the spec they share."""

    def __init__(self, spec: IndexSpec, shards: list, dim: int, normalize: bool, counts: list[int]):
        self.spec, self.shards, self.dim, self.normalize, self.counts = spec, shards, dim, normalize, counts

    @property
    def ntotal(self) -> int:
        return sum(self.counts)

    @staticmethod
    def _actors(spec: IndexSpec, num_shards: int, cpus_per_shard: Optional[float], gpus_per_shard: float):
        """Shard actors sized so that a Ray Data read task and the searchers (SEARCHER_CPUS each)
        still fit beside them (on 2 CPUs, two 1-CPU shards starved the graph job's reads).
        FAISS threads: the node's cores split over the shards, unless CPUs are given."""
        import ray

        from raycluster.ray_utils import actor_cpus

        total = ray.cluster_resources().get("CPU", 1.0)
        cpus = actor_cpus(total, num_shards, cpus_per_shard, gpus_per_shard > 0, reserve=1.0 + SEARCHER_CPUS)
        threads = max(1, int(cpus_per_shard) if cpus_per_shard else int(total // num_shards))
        remote = ray.remote(IndexShard).options(num_cpus=cpus, num_gpus=gpus_per_shard)
        return [remote.remote(spec, threads) for _ in range(num_shards)]

    @classmethod
    def build(cls, store: EmbeddingStore, spec: IndexSpec, num_shards: int = 1, normalize: bool = True,
              cpus_per_shard: Optional[float] = None, gpus_per_shard: float = 0.0, seed: int = 0) -> "ShardedIndex":
        """Train once on a sample (driver), ship the trained empty index to every shard, then let
        each shard add its parts (parts assigned round-robin). Raises ValueError for an empty
        store or a shard that would get no rows."""
        import ray

        parts = part_rows(store)
        if not parts:
            raise ValueError(f"embedding store {store.root!r} has no part files")
        if num_shards < 1 or num_shards > len(parts):
            raise ValueError(f"{num_shards} index shards for {len(parts)} part file(s): every shard needs at "
                             f"least one part (use 1..{len(parts)} shards)")
        total = sum(count for _, count in parts)
        start = time.time()
        sample = sample_rows(store, parts, spec.train_size, normalize, seed)[1] if spec.needs_training else \
            read_vectors(store, parts[0][0], normalize)[1][:1]
        trained = serialize(build_index(spec, sample.shape[1], total, sample if spec.needs_training else None))
        train_seconds = time.time() - start
        actors = cls._actors(spec, num_shards, cpus_per_shard, gpus_per_shard)
        dims = ray.get([actor.set_index.remote(trained) for actor in actors])
        first_ids = np.concatenate([[0], np.cumsum([count for _, count in parts])[:-1]])
        assigned = [[(path, int(first)) for i, ((path, _), first) in enumerate(zip(parts, first_ids))
                     if i % num_shards == shard] for shard in range(num_shards)]
        counts = ray.get([actor.add_parts.remote(store.root, mine, normalize) for actor, mine in zip(actors, assigned)])
        if min(counts) == 0:
            raise ValueError(f"index shard {counts.index(0)} is empty (its parts hold no rows)")
        log.info("built %s x %d shard(s): %d vectors (train %.1fs, total %.1fs)", spec.kind, num_shards, sum(counts),
                 train_seconds, time.time() - start)
        return cls(spec, actors, dims[0], normalize, counts)

    @classmethod
    def from_vectors(cls, vectors: np.ndarray, spec: IndexSpec, num_shards: int = 1, normalize: bool = True,
                     cpus_per_shard: Optional[float] = None, gpus_per_shard: float = 0.0,
                     seed: int = 0) -> "ShardedIndex":
        """Like `build`, from an in-memory (N, D) array (a method's training set): contiguous row
        ranges go to the shards through the object store; global ids are row numbers."""
        import ray

        vectors = unit_rows(vectors) if normalize else np.ascontiguousarray(vectors, dtype=np.float32)
        if not 1 <= num_shards <= len(vectors):
            raise ValueError(f"{num_shards} index shards for {len(vectors)} vectors")
        sample = None
        if spec.needs_training:
            rng = np.random.default_rng(seed)
            sample = vectors[rng.choice(len(vectors), size=min(spec.train_size, len(vectors)), replace=False)]
        trained = serialize(build_index(spec, vectors.shape[1], len(vectors), sample))
        actors = cls._actors(spec, num_shards, cpus_per_shard, gpus_per_shard)
        ray.get([actor.set_index.remote(trained) for actor in actors])
        ranges = np.array_split(np.arange(len(vectors)), num_shards)
        counts = ray.get([actor.add_array.remote(ray.put(vectors[rows]), int(rows[0]))
                          for actor, rows in zip(actors, ranges)])
        return cls(spec, actors, vectors.shape[1], normalize, counts)

    def search(self, queries: np.ndarray, k: int, with_keys: bool = False):
        """(nq, D) float32 -> (nq, k) scores float32 and global ids int64 (and keys, an object
        array, when `with_keys`), best first, merged exactly over shards.
        Raises EmbeddingWidthError / ValueError for a wrong width or k > N."""
        import ray

        check_width(queries, self.dim)
        if k > self.ntotal:
            raise ValueError(f"k={k} is larger than the {self.ntotal} indexed vectors")
        queries = unit_rows(queries) if self.normalize else np.ascontiguousarray(queries, dtype=np.float32)
        results = ray.get([shard.search.remote(queries, k, with_keys) for shard in self.shards])
        return merge_topk([r[0] for r in results], [r[1] for r in results], k, self.spec.larger_is_closer,
                          [r[2] for r in results] if with_keys else None)

    def save(self, url: str) -> None:
        """Each shard writes its own files (in parallel), then the manifest last."""
        import ray

        url = url.rstrip("/")
        ray.get([shard.save.remote(f"{url}/shard-{i:05d}") for i, shard in enumerate(self.shards)])
        manifest = {"spec": vars(self.spec), "dim": self.dim, "normalize": self.normalize, "counts": self.counts}
        atomic_write_bytes(f"{url}/{MANIFEST}", json.dumps(manifest, indent=1).encode())

    @classmethod
    def load(cls, url: str, cpus_per_shard: Optional[float] = None, gpus_per_shard: float = 0.0) -> "ShardedIndex":
        import ray

        url = url.rstrip("/")
        try:
            with fsspec.open(f"{url}/{MANIFEST}", "r") as handle:
                manifest = json.load(handle)
        except FileNotFoundError:
            raise FileNotFoundError(f"no sharded index at {url!r} ({MANIFEST} missing)") from None
        spec = IndexSpec(**manifest["spec"])
        actors = cls._actors(spec, len(manifest["counts"]), cpus_per_shard, gpus_per_shard)
        counts = ray.get([actor.load.remote(f"{url}/shard-{i:05d}") for i, actor in enumerate(actors)])
        if counts != manifest["counts"]:
            raise ValueError(f"index at {url!r} is inconsistent: shards hold {counts}, manifest says {manifest['counts']}")
        return cls(spec, actors, manifest["dim"], manifest["normalize"], counts)

    def shutdown(self) -> None:
        import ray

        for shard in self.shards:
            ray.kill(shard)
