"""run_extraction: shards -> Ray Data (read, decode tasks; extractor actor pool) -> Parquet store.

The driver consumes the stream and writes one part file per input shard as soon as all of
that shard's samples have arrived (counts come from the shard manifest; shards without one
are written when the stream ends). A rerun skips shards whose part was made from the same
shard file by the same extractor (`raycluster.fingerprint`), so an interrupted job resumes
where it stopped and a changed one is redone. Corrupt samples are dropped and counted per shard.
"""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from raycluster.config import BackboneConfig, ClusterConfig, DataConfig
from raycluster.data.shards import read_manifest, read_shards, resolve_shards
from raycluster.data.store import EmbeddingStore, part_name
from raycluster.data.transforms import ImageSizeError, decode_batch
from raycluster.fingerprint import (StaleArtifactError, file_identities, fingerprint, local_paths_in, reusable,
                                    write_fingerprint)
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
    """Collects streamed rows per shard and writes each shard's part when it is complete.
    shard_ids: shard URL -> fingerprint of the shard file, recorded in its part."""

    def __init__(self, store: EmbeddingStore, counts: dict, dtype: str, shard_ids: dict):
        self.store, self.counts, self.dtype, self.shard_ids = store, counts, dtype, shard_ids
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
        self.store.write_part(shard, rows["key"], rows["label"], vectors, rows["corrupt"], self.dtype,
                              shard_id=self.shard_ids.get(shard))
        self.written += 1
        self.samples += len(rows["key"])
        if rows["corrupt"]:
            self.corrupt_by_shard[shard] = rows["corrupt"]
            log.warning("shard %s: skipped %d corrupt sample(s)", shard, rows["corrupt"])
        log.info("embedded %s: %d samples -> %s", os.path.basename(shard), len(rows["key"]), part_name(shard))

    def flush_all(self) -> None:
        for shard in list(self.rows):
            self.flush(shard)


def cause_of_type(err: BaseException, kind: type):
    """The first exception of type `kind` in err's chain (Ray wraps a task's error in its own);
    Ray Data's UserCodeException keeps only the text of the task's error: then its last
    `<kind>: message` line, as a `kind`."""
    import re

    found = re.findall(rf"\b{kind.__name__}: (.+)", str(err))
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "cause", None)   # RayTaskError: the task's own exception
        if isinstance(inner, BaseException):
            err = inner
            continue
        if isinstance(err, kind):
            return err
        err = err.__cause__ or err.__context__
    return kind(found[-1].strip()) if found else None


# glibc malloc must keep activation memory between forward passes instead of mapping it fresh
# (and page-faulting it in) every pass: why each setting, docs/backbones.md ("Extraction on
# CPU"); measured, bench/README.md (extract_throughput). OpenMP keeps its default wait policy:
# with PASSIVE (threads sleep at every barrier) the actor's passes were slower, and the read
# and decode tasks gained nothing from the cycles it left.
CPU_ACTOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
                 "MALLOC_TOP_PAD_": str(512 << 20), "MALLOC_ARENA_MAX": "1"}


def actor_pool(settings):
    """The extractor actors of map_batches: a fixed pool, or an autoscaling one from
    `min_concurrency` to `concurrency`."""
    import ray.data

    if settings.min_concurrency is None:
        return ray.data.ActorPoolStrategy(size=settings.concurrency)
    if not 1 <= settings.min_concurrency <= settings.concurrency:
        raise ValueError(f"cluster.extract.min_concurrency={settings.min_concurrency} must be in 1..concurrency")
    return ray.data.ActorPoolStrategy(min_size=settings.min_concurrency, max_size=settings.concurrency)


def extractor_inputs(backbone: BackboneConfig) -> dict:
    """What a store's embeddings depend on besides the shards: the extractor's config, how images
    are decoded, the stored dtype, its weights (note, and the content hash of every local file
    or folder its config names)."""
    cls, config = extractor_class(backbone)
    return {"extractor": backbone.extractor, "dtype": backbone.dtype, "image_spec": asdict(cls.image_spec(**config)),
            "weights": cls.weights_note(**config), "files": local_paths_in(config)}


def pending_shards(store: EmbeddingStore, shards: list[str], reuse: str) -> tuple[list[str], dict]:
    """(shards to embed, shard URL -> shard fingerprint). A part is reused only when it was made
    from the same shard file (name, size, mtime / ETag); parts of shards that changed or are no
    longer listed are removed (reuse="strict": StaleArtifactError)."""
    shard_ids = {url: fingerprint(identity) for url, identity in file_identities(shards).items()}
    wanted = {part_name(url): shard_ids[url] for url in shards}
    done = store.done_shards()
    stale = sorted(name for name, shard_id in done.items() if wanted.get(name) != shard_id)
    if stale:
        message = (f"{len(stale)} part(s) in {store.root} were made from shards that changed or are no longer "
                   f"listed (e.g. {stale[0]})")
        if reuse == "strict":
            raise StaleArtifactError(f"{message}; reuse=strict: delete them or set reuse=auto")
        log.warning("%s; removing them", message)
        store.remove_parts(stale)
    return [url for url in shards if done.get(part_name(url)) != shard_ids[url]], shard_ids


def run_extraction(data: DataConfig, backbone: BackboneConfig, cluster: ClusterConfig,
                   store_dir: str, reuse: str = "auto") -> ExtractionSummary:
    """Embed every shard of `data` not yet in the store at `store_dir`; Ray must be running.
    The store is reused only for the same extractor inputs (`extractor_inputs`), each part only
    for the same shard file (`pending_shards`)."""
    import ray

    start = time.time()
    shards = resolve_shards(data.shards)
    store = EmbeddingStore(store_dir)
    inputs = extractor_inputs(backbone)
    if not reusable(store_dir, inputs, "embeddings", reuse, owned=("part-*.parquet",)):
        write_fingerprint(store_dir, inputs)   # first: parts written from now on belong to these inputs
    pending, shard_ids = pending_shards(store, shards, reuse)
    cls, config = extractor_class(backbone)
    weights = inputs["weights"]
    summary = ExtractionSummary(store_dir, len(shards), len(shards) - len(pending), 0, 0, 0, 0.0, weights)
    if not pending:
        log.info("all %d shards already embedded in %s", len(shards), store_dir)
        return summary
    log.info("embedding %d of %d shards (%d done earlier) with %s", len(pending), len(shards),
             len(shards) - len(pending), weights)

    settings = cluster.extract
    spec = cls.image_spec(**config)
    use_gpu = settings.num_gpus_per_actor > 0
    total_cpus = ray.cluster_resources().get("CPU", 1.0)
    cpus = actor_cpus(total_cpus, settings.concurrency, settings.num_cpus_per_actor, use_gpu)
    # Threads are not the logical reservation: a CPU actor gets its share of the machine's
    # cores (Ray Data fuses decoding into the actor, and read tasks are mostly I/O).
    threads = settings.torch_threads or max(1, int(total_cpus // settings.concurrency) if not use_gpu else int(cpus))
    runtime = {"autocast": settings.autocast, "device": "cuda" if use_gpu else "cpu", "torch_threads": threads,
               "forward_rows": None if use_gpu else settings.cpu_forward_rows}
    actor_env = {} if use_gpu else {"runtime_env": {"env_vars": CPU_ACTOR_ENV}}
    dataset = (read_shards(pending)
               .map_batches(decode_batch, fn_kwargs={"spec": spec}, batch_size=settings.batch_size,
                            num_cpus=settings.preprocess_num_cpus)
               .map_batches(cls, fn_constructor_kwargs={**config, **runtime}, batch_size=settings.batch_size,
                            compute=actor_pool(settings), num_cpus=cpus, num_gpus=settings.num_gpus_per_actor,
                            **actor_env))
    writer = ShardPartWriter(store, expected_counts(pending), backbone.dtype, shard_ids)
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if not summary.startup_seconds:
                summary.startup_seconds = time.time() - start
            writer.add(batch)
    except Exception as err:
        user_error = cause_of_type(err, ImageSizeError)
        if user_error is None:
            raise
        raise ImageSizeError(str(user_error)) from None   # one line, not a Ray task traceback
    writer.flush_all()

    summary.shards_written, summary.samples = writer.written, writer.samples
    summary.corrupt_by_shard = writer.corrupt_by_shard
    summary.corrupt = sum(writer.corrupt_by_shard.values())
    summary.seconds = time.time() - start
    log.info("extraction: %d samples, %d corrupt skipped, %.1f images/s", summary.samples, summary.corrupt,
             summary.images_per_second)
    return summary
