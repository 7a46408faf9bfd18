"""The main job as a library call: shards -> embeddings -> method -> assignments + metrics.

Every stage is skipped when its output exists (shards with a manifest, embedding parts per
shard), so a rerun after a crash redoes only what is missing. After extraction nothing of size
N reaches the driver: the method fits in a Ray task (`raycluster.app.fitting`), rows are assigned
as a stream (`raycluster.assign`), metrics come from summed counts plus a bounded sample.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict
from typing import Optional

from raycluster.app.fitting import fit_off_driver
from raycluster.assign import HasLevels, PoolSettings, assign_rows, level_counts
from raycluster.config import RunConfig
from raycluster.data.builtin import samples_from_source
from raycluster.data.postprocess import PCA_SAMPLE, Postprocess
from raycluster.data.rows import StoreRows
from raycluster.data.shards import BUILDING, MANIFEST, read_manifest, resolve_shards, write_shards
from raycluster.data.store import EmbeddingStore
from raycluster.features.extract import run_extraction
from raycluster.fingerprint import listing_hash, reusable, write_fingerprint
from raycluster.io import atomic_write_bytes
from raycluster.methods.base import ClusteringMethod
from raycluster.methods.saving import save_fitted
from raycluster.metrics import silhouette_sample, table_metrics
from raycluster.ray_utils import ensure_ray
from raycluster.report.build import ReportData
from raycluster.runs import METHOD_FILE, POSTPROCESS_FILE

log = logging.getLogger(__name__)


def source_inputs(data) -> dict:
    """What shards built from `data.source` depend on: its settings, the shard size and, for
    sources read from disk, a listing hash of every file under the path (names, sizes, mtimes)."""
    source = data.source
    inputs = {"source": asdict(source), "samples_per_shard": data.samples_per_shard}
    if source.path:
        if not os.path.exists(source.path):
            raise FileNotFoundError(f"data.source.path {source.path!r} does not exist")
        inputs["listing"] = listing_hash(source.path)
    return inputs


def ensure_shards(data, reuse: str = "auto") -> dict:
    """Build the shards from `data.source` unless shards made from the same source are there;
    returns {"shards", "samples", "built", "skipped"} (samples: from the manifest, None for shards
    written elsewhere without one; skipped: {reason: files} the source passed over).

    Shards built here carry the fingerprint of their source (`source_inputs`): a changed limit,
    another folder under the same name, or files added to the folder rebuild them (or, with
    reuse="strict", raise). A build that was interrupted has no fingerprint and is built again."""
    buildable = data.source is not None and isinstance(data.shards, str) and "{" not in data.shards
    if not buildable:
        shards = resolve_shards(data.shards)
        manifest = read_manifest(os.path.dirname(shards[0])) if shards else None
        return {"shards": len(shards), "samples": (manifest or {}).get("num_samples"), "built": False,
                "skipped": (manifest or {}).get("skipped", {})}
    inputs = source_inputs(data)
    if reusable(data.shards, inputs, "shards", reuse, owned=("*.tar", MANIFEST, BUILDING)):
        manifest = read_manifest(data.shards) or {}
        return {"shards": len(manifest.get("shards", [])), "samples": manifest.get("num_samples"), "built": False,
                "skipped": manifest.get("skipped", {})}
    source = data.source
    log.info("building shards for %s from %s into %s", data.name, source.kind, data.shards)
    skipped = Counter()
    manifest = write_shards(samples_from_source(source.kind, source.path, source.classes, source.limit, skipped),
                            data.shards, data.samples_per_shard, source=asdict(source), skipped=skipped)
    write_fingerprint(data.shards, inputs)
    if skipped:
        log.warning("shards: %d file(s) under %s skipped: %s", sum(skipped.values()), source.path,
                    ", ".join(f"{count} {reason}" for reason, count in skipped.items()))
    return {"shards": len(manifest["shards"]), "samples": manifest["num_samples"], "built": True,
            "skipped": dict(skipped)}


def ensure_embeddings(cfg: RunConfig):
    """Shards (built if missing) -> Ray -> embeddings for every shard not yet in the store.

    Returns (shards info from `ensure_shards`, `ExtractionSummary`). Shards come first, before
    Ray starts, so a bad data path fails in a second.
    """
    shards = ensure_shards(cfg.data, cfg.reuse)
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus)
    return shards, run_extraction(cfg.data, cfg.backbone, cfg.cluster, cfg.embeddings_path, cfg.reuse)


def open_rows(cfg: RunConfig) -> StoreRows:
    """The store as the method sees it: post-processing fitted on a bounded sample."""
    settings = cfg.cluster.stream
    rows = StoreRows(EmbeddingStore(cfg.embeddings_path), local_bytes=settings.local_bytes,
                     batch_rows=settings.batch_rows)
    if cfg.backbone.pca_dim:
        sample = rows.sample(PCA_SAMPLE, cfg.seed).vectors
        return rows.with_postprocess(Postprocess.fit(sample, cfg.backbone.pca_dim, cfg.backbone.l2_normalize, cfg.seed,
                                                       cfg.backbone.whiten))
    return rows.with_postprocess(Postprocess(cfg.backbone.l2_normalize))


def fit_and_assign(cfg: RunConfig, method, rows: StoreRows, assignments_dir: str) -> dict:
    """Fit off the driver, assign every row (streamed), score; the driver holds O(K x D + sample).

    Returns {"method" (fitted), "metrics", "report_data" (raycluster.report.ReportData)}."""
    if rows.n_rows < method.n_clusters:
        raise ValueError(f"{method.name}: k={method.n_clusters} clusters is more than the {rows.n_rows} samples")
    settings = cfg.cluster.stream
    start = time.time()
    log.info("fit: %s on %d rows x %d (in a Ray task)", method.name, rows.n_rows, rows.dim)
    method = fit_off_driver(method, rows, with_labels=True)   # labels: logged metrics only
    fit_seconds = time.time() - start
    log.info("fit: done in %.1fs", fit_seconds)

    start = time.time()
    fraction = min(1.0, settings.sample_rows / rows.n_rows)
    pool = PoolSettings(settings.batch_rows, settings.predict_concurrency, settings.predict_num_cpus,
                        settings.predict_num_gpus)
    stats, picked = assign_rows(method, rows, assignments_dir, fraction, cfg.seed, pool)
    assign_seconds = time.time() - start
    data = ReportData.from_sample(stats, rows.sample(settings.sample_rows, cfg.seed), picked)
    metrics = {"fit_seconds": fit_seconds, "assign_seconds": round(assign_seconds, 2), **stats.metrics(),
               "silhouette": silhouette_sample(data.vectors, data.cluster, seed=cfg.seed),
               "silhouette_sample_rows": int(min(len(data.cluster), 5000))}
    metrics["warnings"] = collapse_warnings(metrics, method.n_clusters,
                                            getattr(method, "stages", {}).get("start_size_entropy"))
    for warning in metrics["warnings"]:
        log.warning("WARNING %s: %s", method.name, warning)
    if isinstance(method, HasLevels):   # a tree: counts and scores per level, summed up from level 1
        data.levels = level_counts(stats, method.parents)
        for depth, level in enumerate(data.levels, start=2):
            metrics[f"clusters_used_l{depth}"] = int((level["sizes"] > 0).sum())
            if level["table"] is not None:
                metrics.update({f"{name}_l{depth}": value for name, value in table_metrics(level["table"]).items()})
    return {"method": method, "metrics": metrics, "report_data": data}


COLLAPSE_ENTROPY = 0.5   # normalised size entropy under which the clustering has (nearly) collapsed
DRIFT_ENTROPY = 0.05     # a fall in size entropy from the method's start larger than this: clusters merged


def collapse_warnings(metrics: dict, n_clusters: int, start_entropy: Optional[float] = None) -> list[str]:
    """What a user must be told about the final assignments: most rows in a few clusters, sizes
    much less even than the method's own label-free start had (`start_entropy`, when the method
    records one: a partial collapse while training), or clusters left empty. Uniform sizes give
    entropy 1; everything in one cluster gives 0."""
    warnings = []
    if metrics["size_entropy"] < COLLAPSE_ENTROPY:
        warnings.append(f"collapsed: size entropy {metrics['size_entropy']:.3f} < {COLLAPSE_ENTROPY} (most rows in a "
                        f"few clusters); the assignments are not a usable clustering")
    elif start_entropy is not None and metrics["size_entropy"] < start_entropy - DRIFT_ENTROPY:
        warnings.append(f"partly collapsed: size entropy {metrics['size_entropy']:.3f}, its start had "
                        f"{start_entropy:.3f}: training merged clusters the start kept apart")
    if metrics["clusters_used"] < n_clusters:
        warnings.append(f"{n_clusters - metrics['clusters_used']} of {n_clusters} clusters are empty")
    return warnings


def run_train(cfg: RunConfig) -> dict:
    """Run the whole pipeline for one config; returns the summary dict (also saved as JSON)."""
    start = time.time()
    method = ClusteringMethod.from_config(cfg.method, cfg.reuse)   # a bad method setting fails here, before any work
    os.makedirs(cfg.output_dir, exist_ok=True)
    shards, extraction = ensure_embeddings(cfg)
    store = EmbeddingStore(cfg.embeddings_path)
    rows = open_rows(cfg)
    paths = {name: os.path.join(cfg.output_dir, name) for name in
             ("assignments.parquet", METHOD_FILE, POSTPROCESS_FILE, "summary.json")}
    result = fit_and_assign(cfg, method, rows, paths["assignments.parquet"])
    save_fitted(result["method"], paths[METHOD_FILE], cfg.method)   # for jobs/predict.py
    rows.postprocess.save(paths[POSTPROCESS_FILE])
    corrupt_total = sum(part.get("corrupt", 0) for part in store.part_metadata())
    summary = {
        "data": cfg.data.name, "backbone": cfg.backbone.name, "method": result["method"].name, "seed": cfg.seed,
        "weights": extraction.weights, "samples": rows.n_rows, "dim": rows.dim,
        "stored_dim": rows.stored_dim,
        "k": result["method"].n_clusters, "shards": shards["shards"], "shards_built": shards["built"],
        "shards_embedded_now": extraction.shards_written, "shards_reused": extraction.shards_skipped,
        "corrupt_skipped": corrupt_total, "source_files_skipped": shards["skipped"],
        "extract_seconds": round(extraction.seconds, 2),
        "metrics": result["metrics"], "method_stages": getattr(result["method"], "stages", {}),
        "driver_peak_rss_gib": driver_peak_rss_gib(),
        "total_seconds": round(time.time() - start, 2),
        "outputs": {"assignments": paths["assignments.parquet"], "embeddings": cfg.embeddings_path,
                    "method": paths[METHOD_FILE], "postprocess": paths[POSTPROCESS_FILE],
                    "summary": paths["summary.json"]},
        "postprocess": {"pca_dim": cfg.backbone.pca_dim, "whiten": cfg.backbone.whiten,
                        "l2_normalize": cfg.backbone.l2_normalize},
        "config": {"method": cfg.method, "backbone": cfg.backbone.extractor, "data.shards": cfg.data.shards,
                   "cluster.address": cfg.cluster.address},
    }
    if cfg.report:
        from raycluster.report import ReportOptions, write_report

        report = write_report(os.path.join(cfg.output_dir, "report"), summary, result["report_data"], store,
                              ReportOptions(seed=cfg.seed))
        summary["outputs"]["report"] = report["path"]
        summary["report_seconds"] = report["seconds"]
    summary["driver_peak_rss_gib"] = driver_peak_rss_gib()
    summary["total_seconds"] = round(time.time() - start, 2)
    atomic_write_bytes(summary["outputs"]["summary"], json.dumps(summary, indent=1, default=float).encode())
    log.info("summary\n%s", format_summary(summary))
    return summary


def driver_peak_rss_gib() -> float:
    """This process's resident-memory high-water mark, GiB. Linux: VmHWM of its own address space
    (getrusage's ru_maxrss survives exec, so a job started from a large parent would report the
    parent's size at fork); elsewhere ru_maxrss."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 2**20, 3)   # kB
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def format_summary(summary: dict) -> str:
    """Readable multi-line job summary."""
    metrics = summary["metrics"]
    lines = [
        f"  data {summary['data']}  backbone {summary['backbone']}  method {summary['method']}  k={summary['k']}",
        f"  weights: {summary['weights']}",
        f"  samples {summary['samples']} x {summary['dim']}  shards {summary['shards']} "
        f"(embedded now {summary['shards_embedded_now']}, reused {summary['shards_reused']})  "
        f"corrupt skipped {summary['corrupt_skipped']}",
    ]
    if summary.get("source_files_skipped"):
        lines.append("  source files skipped: " + ", ".join(f"{count} {reason}" for reason, count in
                                                          summary["source_files_skipped"].items()))
    if "acc" in metrics:
        lines.append(f"  ACC {metrics['acc']:.4f}  NMI {metrics['nmi']:.4f}  ARI {metrics['ari']:.4f}")
    silhouette = metrics.get("silhouette")
    lines.append(f"  size entropy {metrics['size_entropy']:.3f}  clusters used {metrics['clusters_used']}  "
                 f"silhouette {silhouette if silhouette is None else round(silhouette, 4)}  "
                 f"mean confidence {metrics['mean_confidence']:.3f}")
    report = f"  report {summary['report_seconds']}s" if "report_seconds" in summary else ""
    lines.append(f"  time: extract {summary['extract_seconds']}s  fit {metrics['fit_seconds']:.2f}s  "
                 f"assign {metrics.get('assign_seconds', 0)}s{report}  total {summary['total_seconds']}s  "
                 f"(driver peak memory {summary.get('driver_peak_rss_gib')} GiB)")
    lines += [f"  WARNING {warning}" for warning in metrics.get("warnings", [])]
    for name, value in summary.get("method_stages", {}).items():   # e.g. DiEC: pretrain, search, fine-tune
        lines.append(f"  {summary['method']} {name}: {round(value, 2) if isinstance(value, float) else value}")
    lines += [f"  {name}: {path}" for name, path in summary["outputs"].items()]
    return "\n".join(lines)
