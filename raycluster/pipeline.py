"""The main job as a library call: shards -> embeddings -> method -> assignments + metrics.

Every stage is skipped when its output exists (shards with a manifest, embedding parts per
shard), so a rerun after a crash redoes only what is missing.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict

import numpy as np

from raycluster.config import RunConfig
from raycluster.data.builtin import samples_from_source
from raycluster.data.shards import ShardNotFoundError, build_interrupted, read_manifest, resolve_shards, write_shards
from raycluster.data.store import EmbeddingStore, Embeddings, unit_rows, write_assignments
from raycluster.features.extract import run_extraction
from raycluster.io import atomic_write_bytes
from raycluster.methods.base import save_fitted
from raycluster.metrics import label_free_metrics, supervised_metrics
from raycluster.ray_utils import ensure_ray

log = logging.getLogger(__name__)


def ensure_shards(data) -> dict:
    """Build the shards from `data.source` unless they exist; returns {"shards", "samples", "built"}
    (samples: from the manifest, None for shards written elsewhere without one).

    Shards whose build was interrupted (`build_interrupted`: a prefix of the dataset) are built
    again, not read as a smaller dataset."""
    buildable = data.source is not None and isinstance(data.shards, str) and "{" not in data.shards
    try:
        shards = resolve_shards(data.shards)
        if not (buildable and build_interrupted(data.shards)):
            manifest = read_manifest(os.path.dirname(shards[0])) if shards else None
            return {"shards": len(shards), "samples": (manifest or {}).get("num_samples"), "built": False}
        log.warning("%s holds %d shard(s) of a build that was interrupted; building the shards again",
                    data.shards, len(shards))
    except ShardNotFoundError:
        if not buildable:
            raise
    source = data.source
    log.info("building shards for %s from %s into %s", data.name, source.kind, data.shards)
    manifest = write_shards(samples_from_source(source.kind, source.path, source.classes, source.limit),
                            data.shards, data.samples_per_shard, source=asdict(source))
    return {"shards": len(manifest["shards"]), "samples": manifest["num_samples"], "built": True}


def ensure_embeddings(cfg: RunConfig):
    """Shards (built if missing) -> Ray -> embeddings for every shard not yet in the store.

    Returns (shards info from `ensure_shards`, `ExtractionSummary`). Shards come first, before
    Ray starts, so a bad data path fails in a second.
    """
    shards = ensure_shards(cfg.data)
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus)
    return shards, run_extraction(cfg.data, cfg.backbone, cfg.cluster, cfg.embeddings_path)


def postprocess(vectors: np.ndarray, pca_dim, l2_normalize: bool, seed: int = 0) -> np.ndarray:
    """Optional PCA to `pca_dim` (fit on all N), then optional L2 normalisation. (N, D) float32."""
    if pca_dim:
        from sklearn.decomposition import PCA

        if pca_dim > min(vectors.shape):
            raise ValueError(f"backbone.pca_dim={pca_dim} exceeds min(N, D) = {min(vectors.shape)}")
        vectors = PCA(pca_dim, random_state=seed).fit_transform(vectors).astype(np.float32)
    if l2_normalize:
        vectors = unit_rows(vectors)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def build_method(method_cfg: dict):
    from hydra.utils import instantiate

    if "_target_" not in method_cfg:
        raise ValueError("method config has no _target_")
    return instantiate(method_cfg, _convert_="all")


def fit_predict(cfg: RunConfig, embeddings: Embeddings) -> dict:
    """Fit the configured method on the store's vectors; returns assignments, metrics and timings."""
    vectors = postprocess(embeddings.vectors, cfg.backbone.pca_dim, cfg.backbone.l2_normalize, cfg.seed)
    method = build_method(cfg.method)
    start = time.time()
    method.fit(vectors, embeddings.labels if embeddings.has_labels else None)  # labels: logged metrics only
    fit_seconds = time.time() - start
    cluster, confidence = method.predict(vectors)
    metrics = {"fit_seconds": fit_seconds}
    if embeddings.has_labels:
        metrics.update(supervised_metrics(embeddings.labels, cluster))
    metrics.update(label_free_metrics(vectors, cluster, method.n_clusters, cfg.seed))
    metrics["mean_confidence"] = float(confidence.mean())
    return {"method": method, "vectors": vectors, "cluster": cluster, "confidence": confidence, "metrics": metrics}


def run_train(cfg: RunConfig) -> dict:
    """Run the whole pipeline for one config; returns the summary dict (also saved as JSON)."""
    start = time.time()
    os.makedirs(cfg.output_dir, exist_ok=True)
    shards, extraction = ensure_embeddings(cfg)
    store = EmbeddingStore(cfg.embeddings_path)
    embeddings = store.load()
    result = fit_predict(cfg, embeddings)
    assignments = os.path.join(cfg.output_dir, "assignments.parquet")
    write_assignments(assignments, embeddings.keys, result["cluster"], result["confidence"])
    save_fitted(result["method"], os.path.join(cfg.output_dir, "method.pkl"))   # for jobs/predict.py
    corrupt_total = sum(part.get("corrupt", 0) for part in store.part_metadata())
    summary = {
        "data": cfg.data.name, "backbone": cfg.backbone.name, "method": result["method"].name, "seed": cfg.seed,
        "weights": extraction.weights, "samples": int(len(embeddings.keys)), "dim": int(embeddings.vectors.shape[1]),
        "k": result["method"].n_clusters, "shards": shards["shards"], "shards_built": shards["built"],
        "shards_embedded_now": extraction.shards_written, "shards_reused": extraction.shards_skipped,
        "corrupt_skipped": corrupt_total, "extract_seconds": round(extraction.seconds, 2),
        "metrics": result["metrics"], "method_stages": getattr(result["method"], "stages", {}),
        "total_seconds": round(time.time() - start, 2),
        "outputs": {"assignments": assignments, "embeddings": cfg.embeddings_path,
                    "method": os.path.join(cfg.output_dir, "method.pkl"),
                    "summary": os.path.join(cfg.output_dir, "summary.json")},
        "postprocess": {"pca_dim": cfg.backbone.pca_dim, "l2_normalize": cfg.backbone.l2_normalize},
        "config": {"method": cfg.method, "backbone": cfg.backbone.extractor, "data.shards": cfg.data.shards,
                   "cluster.address": cfg.cluster.address},
    }
    if cfg.report:
        from raycluster.report import write_report

        report = write_report(os.path.join(cfg.output_dir, "report"), summary, embeddings.keys, result["vectors"],
                              result["cluster"], result["confidence"],
                              embeddings.labels if embeddings.has_labels else None, store)
        summary["outputs"]["report"] = report["path"]
        summary["report_seconds"] = report["seconds"]
        summary["total_seconds"] = round(time.time() - start, 2)
    atomic_write_bytes(summary["outputs"]["summary"], json.dumps(summary, indent=1, default=float).encode())
    log.info("summary\n%s", format_summary(summary))
    return summary


def load_run_summary(run_dir: str) -> dict:
    """The summary.json of a finished `run_train` output_dir; one clear error when there is none."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run_dir must be a finished jobs/train.py output_dir")
    with open(path) as handle:
        return json.load(handle)


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
    if "acc" in metrics:
        lines.append(f"  ACC {metrics['acc']:.4f}  NMI {metrics['nmi']:.4f}  ARI {metrics['ari']:.4f}")
    silhouette = metrics.get("silhouette")
    lines.append(f"  size entropy {metrics['size_entropy']:.3f}  clusters used {metrics['clusters_used']}  "
                 f"silhouette {silhouette if silhouette is None else round(silhouette, 4)}  "
                 f"mean confidence {metrics['mean_confidence']:.3f}")
    report = f"  report {summary['report_seconds']}s" if "report_seconds" in summary else ""
    lines.append(f"  time: extract {summary['extract_seconds']}s  fit {metrics['fit_seconds']:.2f}s{report}  "
                 f"total {summary['total_seconds']}s")
    for name, value in summary.get("method_stages", {}).items():   # e.g. DiEC: pretrain, search, fine-tune
        lines.append(f"  {summary['method']} {name}: {round(value, 2) if isinstance(value, float) else value}")
    lines += [f"  {name}: {path}" for name, path in summary["outputs"].items()]
    return "\n".join(lines)
