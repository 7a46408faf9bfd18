"""run_extraction: shards -> Ray Data (read, decode tasks; extractor actor pool) -> Parquet store.

The driver consumes the stream and writes one part file per input shard as soon as all of
that shard's samples have arrived (counts come from the shard manifest; shards without one
are written when the stream ends). A rerun skips shards whose part exists, so an interrupted
job resumes where it stopped. Corrupt samples are dropped and counted per shard.
"""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from raycluster.config import BackboneConfig, ClusterConfig, DataConfig
from raycluster.data.shards import read_manifest, read_shards, resolve_shards
from raycluster.data.store import EmbeddingStore, part_name
from raycluster.data.transforms import decode_batch
from raycluster.ray_utils import actor_cpus

log = logging.getLogger(__name__)


@dataclass
class ExtractionSummary:
    store: str
    shards_total: int
    shards_skipped: int        # already in the store from an earlier run
    shards_written: int
    samples: int               # embedded in this run
    corrupt: int               # skipped in this run (undecodable)
    seconds: float
    weights: str
    startup_seconds: float = 0.0   # from start until the first embedded batch arrived
    corrupt_by_shard: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return (self.samples + self.corrupt) / self.seconds if self.seconds else 0.0


def extractor_class(backbone: BackboneConfig):
    """(class, constructor kwargs) from `backbone.extractor` = {_target_: ..., **kwargs}."""
    from hydra.utils import get_class

    config = dict(backbone.extractor)
    target = config.pop("_target_", None)
    if not target:
        raise ValueError(f"backbone {backbone.name!r} has no extractor._target_")
    return get_class(target), config


def expected_counts(shards: list[str]) -> dict:
    """Samples per shard URL from the manifest next to the shards, where there is one."""
    counts = {}
    for directory in {os.path.dirname(url) for url in shards}:
        manifest = read_manifest(directory)
        for entry in (manifest or {}).get("shards", []):
            counts[f"{directory}/{entry['name']}"] = entry["count"]
    return counts


class ShardPartWriter:
    """Collects streamed rows per shard and writes each shard's part when it is complete."""

    def __init__(self, store: EmbeddingStore, counts: dict, dtype: str):
        self.store, self.counts, self.dtype = store, counts, dtype
        self.rows = defaultdict(lambda: {"key": [], "label": [], "embedding": [], "corrupt": 0})
        self.written, self.samples, self.corrupt_by_shard = 0, 0, {}

    def add(self, batch: dict) -> None:
        for index, shard in enumerate(batch["shard"]):
            rows = self.rows[shard]
            if batch["ok"][index]:
                rows["key"].append(batch["key"][index])
                rows["label"].append(batch["label"][index])
                rows["embedding"].append(batch["embedding"][index])
            else:
                rows["corrupt"] += 1
        for shard in list(self.rows):
            if shard in self.counts and self._seen(shard) >= self.counts[shard]:
                self.flush(shard)

    def _seen(self, shard: str) -> int:
        return len(self.rows[shard]["key"]) + self.rows[shard]["corrupt"]

    def flush(self, shard: str) -> None:
        rows = self.rows.pop(shard)
        if not rows["key"]:
            log.warning("shard %s: no decodable samples (%d corrupt), nothing written", shard, rows["corrupt"])
            self.corrupt_by_shard[shard] = rows["corrupt"]
            return
        vectors = np.stack(rows["embedding"])
        self.store.write_part(shard, rows["key"], rows["label"], vectors, rows["corrupt"], self.dtype)
        self.written += 1
        self.samples += len(rows["key"])
        if rows["corrupt"]:
            self.corrupt_by_shard[shard] = rows["corrupt"]
            log.warning("shard %s: skipped %d corrupt sample(s)", shard, rows["corrupt"])
        log.info("embedded %s: %d samples -> %s", os.path.basename(shard), len(rows["key"]), part_name(shard))

    def flush_all(self) -> None:
        for shard in list(self.rows):
            self.flush(shard)


def pool_size(settings):
    """`concurrency` for map_batches: a fixed pool, or (min, max) for an autoscaling one."""
    if settings.min_concurrency is None:
        return settings.concurrency
    if not 1 <= settings.min_concurrency <= settings.concurrency:
        raise ValueError(f"cluster.extract.min_concurrency={settings.min_concurrency} must be in 1..concurrency")
    return (settings.min_concurrency, settings.concurrency)


def run_extraction(data: DataConfig, backbone: BackboneConfig, cluster: ClusterConfig,
                   store_dir: str) -> ExtractionSummary:
    """Embed every shard of `data` not yet in the store at `store_dir`; Ray must be running."""
    import ray

    start = time.time()
    shards = resolve_shards(data.shards)
    store = EmbeddingStore(store_dir)
    done = store.done_shards()
    pending = [url for url in shards if part_name(url) not in done]
    cls, config = extractor_class(backbone)
    weights = cls.weights_note(**config)
    summary = ExtractionSummary(store_dir, len(shards), len(shards) - len(pending), 0, 0, 0, 0.0, weights)
    if not pending:
        log.info("all %d shards already embedded in %s", len(shards), store_dir)
        return summary
    log.info("embedding %d of %d shards (%d done earlier) with %s", len(pending), len(shards), len(done), weights)

    settings = cluster.extract
    spec = cls.image_spec(**config)
    use_gpu = settings.num_gpus_per_actor > 0
    total_cpus = ray.cluster_resources().get("CPU", 1.0)
    cpus = actor_cpus(total_cpus, settings.concurrency, settings.num_cpus_per_actor, use_gpu)
    # Threads are not the logical reservation: a CPU actor gets its share of the machine's
    # cores (Ray Data fuses decoding into the actor, and read tasks are mostly I/O).
    threads = settings.torch_threads or max(1, int(total_cpus // settings.concurrency) if not use_gpu else int(cpus))
    runtime = {"autocast": settings.autocast, "device": "cuda" if use_gpu else "cpu", "torch_threads": threads}
    # CPU actors share their cores with read tasks and the driver: OpenMP threads that spin while
    # waiting at a barrier then burn the time the other processes need (bench/extract_throughput.py).
    actor_env = {} if use_gpu else {"runtime_env": {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}}
    dataset = (read_shards(pending)
               .map_batches(decode_batch, fn_kwargs={"spec": spec}, batch_size=settings.batch_size,
                            num_cpus=settings.preprocess_num_cpus)
               .map_batches(cls, fn_constructor_kwargs={**config, **runtime}, batch_size=settings.batch_size,
                            concurrency=pool_size(settings), num_cpus=cpus, num_gpus=settings.num_gpus_per_actor,
                            **actor_env))
    writer = ShardPartWriter(store, expected_counts(pending), backbone.dtype)
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if not summary.startup_seconds:
            summary.startup_seconds = time.time() - start
        writer.add(batch)
    writer.flush_all()

    summary.shards_written, summary.samples = writer.written, writer.samples
    summary.corrupt_by_shard = writer.corrupt_by_shard
    summary.corrupt = sum(writer.corrupt_by_shard.values())
    summary.seconds = time.time() - start
    log.info("extraction: %d samples, %d corrupt skipped, %.1f images/s", summary.samples, summary.corrupt,
             summary.images_per_second)
    return summary
