"""run_extraction: shards -> Ray Data actor pool of ShardEmbedders -> Parquet store.

Each actor call takes whole shards: it streams a shard's tar, decodes and embeds its images in
batches and writes the shard's part itself, so neither pixels nor embeddings pass through the
object store or the driver; the driver only hands out shard URLs and counts what comes back.
A rerun skips shards whose part was made from the same shard file by the same extractor
(`raycluster.fingerprint`), so an interrupted job resumes where it stopped and a changed one is
redone. Corrupt samples are dropped and counted per shard.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from raycluster.config import BackboneConfig, ClusterConfig, DataConfig
from raycluster.data.shards import resolve_shards, shard_batches
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
    startup_seconds: float = 0.0   # from start until the first shard was embedded
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


class ShardEmbedder:
    """The Ray Data actor of extraction: embeds whole shards and writes their parts.

    A call gets rows `shard` (URL) and `shard_id` (its file's fingerprint). Per shard it
    streams the tar (`shard_batches`), decodes `batch_size` images at a time, runs the extractor
    and writes the shard's part (atomically: whole or absent). Returns one row per shard:
    `shard`, `samples` (embedded), `corrupt` (skipped), `written` (False: nothing decodable).
    decode_threads > 0 decodes on that many threads, that many batches ahead of the model (a GPU
    actor's CPUs); 0 decodes between forward passes, as a plain loop does (a CPU actor, whose
    cores run the model).
    """

    def __init__(self, backbone: BackboneConfig, runtime: dict, store_root: str, batch_size: int,
                 decode_threads: int = 0):
        cls, config = extractor_class(backbone)
        self.extractor = cls(**config, **runtime)
        self.store, self.dtype = EmbeddingStore(store_root), backbone.dtype
        self.batch_size, self.decode_threads = batch_size, decode_threads

    def decoded_batches(self, url: str):
        batches = shard_batches(url, self.batch_size)
        if not self.decode_threads:
            yield from (decode_batch(batch, self.extractor.spec) for batch in batches)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.decode_threads) as pool:   # PIL decodes and resizes without the GIL
            ahead = deque()
            for batch in batches:
                ahead.append(pool.submit(decode_batch, batch, self.extractor.spec))
                if len(ahead) > self.decode_threads:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()

    def embed_shard(self, url: str, shard_id: str) -> dict:
        keys, labels, vectors, corrupt = [], [], [], 0
        for batch in self.decoded_batches(url):
            out = self.extractor(batch)
            ok = out["ok"]
            corrupt += int((~ok).sum())
            keys.extend(out["key"][ok])
            labels.append(out["label"][ok])
            vectors.append(out["embedding"][ok])
        if keys:
            self.store.write_part(url, keys, np.concatenate(labels), np.concatenate(vectors), corrupt, self.dtype,
                                  shard_id=shard_id)
        return {"shard": url, "samples": len(keys), "corrupt": corrupt, "written": bool(keys)}

    def __call__(self, batch: dict) -> dict:
        rows = [self.embed_shard(url, shard_id) for url, shard_id in zip(batch["shard"], batch["shard_id"])]
        return {column: np.array([row[column] for row in rows]) for column in rows[0]}


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
# with PASSIVE (threads sleep at every barrier) the actor's passes were slower.
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
    weights = inputs["weights"]
    summary = ExtractionSummary(store_dir, len(shards), len(shards) - len(pending), 0, 0, 0, 0.0, weights)
    if not pending:
        log.info("all %d shards already embedded in %s", len(shards), store_dir)
        return summary
    log.info("embedding %d of %d shards (%d done earlier) with %s", len(pending), len(shards),
             len(shards) - len(pending), weights)

    settings = cluster.extract
    use_gpu = settings.num_gpus_per_actor > 0
    total_cpus = ray.cluster_resources().get("CPU", 1.0)
    # A fixed pool must fit in the cluster as it is; an autoscaling one grows with the nodes added.
    cpus = actor_cpus(total_cpus, settings.concurrency, settings.num_cpus_per_actor, use_gpu,
                      must_fit_now=settings.min_concurrency is None)
    # Threads are not the logical reservation: a CPU actor gets its share of the machine's
    # cores (it reads, decodes and embeds its shards itself; nothing else runs beside it).
    threads = settings.torch_threads or max(1, int(total_cpus // settings.concurrency) if not use_gpu else int(cpus))
    runtime = {"autocast": settings.autocast, "device": "cuda" if use_gpu else "cpu", "torch_threads": threads,
               "forward_rows": None if use_gpu else settings.cpu_forward_rows}
    decode_threads = settings.decode_threads if settings.decode_threads is not None else (int(cpus) if use_gpu else 0)
    actor_env = {} if use_gpu else {"runtime_env": {"env_vars": CPU_ACTOR_ENV}}
    # One block per shard: the pool hands shards out one at a time, so actors stay evenly busy.
    dataset = (ray.data.from_items([{"shard": url, "shard_id": shard_ids[url]} for url in pending],
                                   override_num_blocks=len(pending))
               .map_batches(ShardEmbedder, batch_size=1, compute=actor_pool(settings), num_cpus=cpus,
                            num_gpus=settings.num_gpus_per_actor, fn_constructor_kwargs={
                                "backbone": backbone, "runtime": runtime, "store_root": store_dir,
                                "batch_size": settings.batch_size, "decode_threads": decode_threads}, **actor_env))
    try:
        for row in dataset.iter_rows():
            if not summary.startup_seconds:
                summary.startup_seconds = time.time() - start
            summary.samples += int(row["samples"])
            if row["corrupt"]:
                summary.corrupt_by_shard[row["shard"]] = int(row["corrupt"])
                log.warning("shard %s: skipped %d corrupt sample(s)", row["shard"], row["corrupt"])
            if row["written"]:
                summary.shards_written += 1
                log.info("embedded %s: %d samples -> %s", os.path.basename(row["shard"]), row["samples"],
                         part_name(row["shard"]))
            else:
                log.warning("shard %s: no decodable samples, nothing written", row["shard"])
    except Exception as err:
        user_error = cause_of_type(err, ImageSizeError)
        if user_error is None:
            raise
        raise ImageSizeError(str(user_error)) from None   # one line, not a Ray task traceback
    summary.corrupt = sum(summary.corrupt_by_shard.values())
    summary.seconds = time.time() - start
    log.info("extraction: %d samples, %d corrupt skipped, %.1f images/s", summary.samples, summary.corrupt,
             summary.images_per_second)
    return summary
