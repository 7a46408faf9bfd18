"""FAISS indexes from config: exact, IVF-Flat, IVF-PQ, HNSW; inner product or L2; CPU or GPU.

One code path for every kind: `IndexSpec.factory_string()` names the index in FAISS's factory
syntax, `build_index` creates and (when the kind needs it) trains it on a sample, search-time
knobs (nprobe, efSearch) go through FAISS's ParameterSpace. On a machine with the GPU wheel
and a device, IVF and flat indexes are moved to the GPU; HNSW has no GPU version and stays on CPU.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from raycluster.errors import EmbeddingWidthError

log = logging.getLogger(__name__)

KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw")


@dataclass
class IndexSpec:
    kind: str = "flat"                 # flat | ivf_flat | ivf_pq | hnsw
    metric: str = "ip"                 # ip (cosine on unit vectors) | l2
    nlist: Optional[int] = None        # IVF lists; null: 4 * sqrt(N), at most N / 39 (FAISS wants 39 points per list)
    nprobe: int = 16                   # IVF lists visited per query
    pq_m: int = 32                     # PQ sub-quantisers (must divide the width)
    pq_bits: int = 8
    hnsw_m: int = 32                   # HNSW graph degree
    ef_construction: int = 40
    ef_search: int = 64
    train_size: int = 100_000          # vectors sampled to train quantisers / PQ codebooks
    use_gpu: Optional[bool] = None     # null: GPU when the FAISS GPU build sees a device

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {self.kind!r}")
        if self.metric not in ("ip", "l2"):
            raise ValueError(f"index metric must be 'ip' or 'l2', got {self.metric!r}")

    @property
    def faiss_metric(self) -> int:
        import faiss

        return faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2

    @property
    def larger_is_closer(self) -> bool:
        return self.metric == "ip"

    def lists_for(self, n: int) -> int:
        """IVF list count for n indexed vectors."""
        return self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))

    def factory_string(self, dim: int, n: int) -> str:
        """FAISS index_factory description for `dim`-wide vectors, `n` to be indexed in all."""
        if self.kind == "flat":
            return "Flat"
        if self.kind == "hnsw":
            return f"HNSW{self.hnsw_m},Flat"
        if self.kind == "ivf_flat":
            return f"IVF{self.lists_for(n)},Flat"
        if dim % self.pq_m:
            raise ValueError(f"pq_m={self.pq_m} must divide the embedding width {dim}")
        return f"IVF{self.lists_for(n)},PQ{self.pq_m}x{self.pq_bits}"

    @property
    def needs_training(self) -> bool:
        return self.kind in ("ivf_flat", "ivf_pq")


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(spec: IndexSpec, dim: int, n_total: int, train_sample: Optional[np.ndarray] = None):
    """An empty FAISS index for `dim`-wide float32 vectors, trained on `train_sample` (T, dim)
    when the kind needs it; `n_total` (all vectors to be indexed) sizes the IVF lists."""
    import faiss

    index = faiss.index_factory(dim, spec.factory_string(dim, n_total), spec.faiss_metric)
    if spec.kind == "hnsw":
        index.hnsw.efConstruction = spec.ef_construction
    if spec.needs_training:
        if train_sample is None:
            raise ValueError(f"a {spec.kind} index needs a training sample")
        check_width(train_sample, dim, "training sample")
        log.info("training %s on %d vectors", spec.factory_string(dim, n_total), len(train_sample))
        index.train(np.ascontiguousarray(train_sample, dtype=np.float32))
    return index


def to_device(index, spec: IndexSpec):
    """The index on the GPU when asked for (or auto and available) and the kind supports it."""
    use_gpu = gpu_available() if spec.use_gpu is None else spec.use_gpu
    if not use_gpu or spec.kind == "hnsw":
        return index
    import faiss

    if not gpu_available():
        raise RuntimeError("neighbors.use_gpu=true but FAISS sees no GPU (install the `gpu` extra on a CUDA machine)")
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)


def set_search_params(index, spec: IndexSpec) -> None:
    """nprobe (IVF) / efSearch (HNSW) on a CPU or GPU index."""
    import faiss

    space = faiss.GpuParameterSpace() if "Gpu" in type(index).__name__ else faiss.ParameterSpace()
    if spec.kind in ("ivf_flat", "ivf_pq"):
        space.set_index_parameter(index, "nprobe", spec.nprobe)
    elif spec.kind == "hnsw":
        space.set_index_parameter(index, "efSearch", spec.ef_search)


def check_width(vectors: np.ndarray, dim: int, what: str = "queries") -> None:
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise EmbeddingWidthError(f"{what} have shape {vectors.shape}, the index holds {dim}-wide vectors")


def serialize(index) -> bytes:
    """Index -> bytes (a GPU index is copied to CPU first)."""
    import faiss

    if "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def merge_topk(scores: list[np.ndarray], ids: list[np.ndarray], k: int, larger_is_closer: bool,
               keys: Optional[list[np.ndarray]] = None):
    """Exact merge of per-shard top-k lists.

    scores[s], ids[s]: (nq, k_s) float32 / int64 from shard s (id -1 = no result); keys[s]:
    optional (nq, k_s) object arrays of sample keys carried along. Returns (nq, k) float32
    scores and int64 ids (and object keys), best first; ties keep shard order (stable sort).
    """
    score = np.concatenate(scores, axis=1).astype(np.float32)
    ident = np.concatenate(ids, axis=1).astype(np.int64)
    worst = -np.inf if larger_is_closer else np.inf
    score = np.where(ident < 0, worst, score)
    order = np.argsort(-score if larger_is_closer else score, axis=1, kind="stable")[:, :k]
    merged = (np.take_along_axis(score, order, axis=1), np.take_along_axis(ident, order, axis=1))
    if keys is None:
        return merged
    return (*merged, np.take_along_axis(np.concatenate(keys, axis=1), order, axis=1))
