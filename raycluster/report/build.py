"""The cluster report: one static folder (index.html + PNGs + thumbnails) per run.

    report/index.html        run summary, metrics, diagnostics, map, one card per cluster
    report/assets/*.png      map, cluster sizes, confidence, cluster-vs-class heat map
    report/thumbs/*.jpg      central and least-confident members of each cluster

Relative links only and no scripts from anywhere: it opens from disk, offline. The folder is
built under a temporary name and renamed into place, so a crash never leaves half a report.
Output size is bounded whatever N is: the map is a sample, thumbnails are capped per cluster.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Optional

import numpy as np

from raycluster.data.shards import read_manifest
from raycluster.data.store import EmbeddingStore
from raycluster.metrics import silhouette_sample, size_entropy
from raycluster.report import plots
from raycluster.report.select import bounded_sample, representative_members
from raycluster.report.thumbnails import thumbnail_names, write_thumbnails

log = logging.getLogger(__name__)


@dataclass
class ReportOptions:
    map_points: int = 5000       # points on the 2-D map (uniform sample)
    map_method: str = "umap"     # umap | pca
    central: int = 8             # thumbnails of the most central members per cluster
    uncertain: int = 4           # thumbnails of the least confident members per cluster
    thumb_size: int = 96         # thumbnail box, pixels
    seed: int = 0


def write_report(report_dir: str, summary: dict, keys: np.ndarray, vectors: np.ndarray, cluster: np.ndarray,
                 confidence: np.ndarray, labels: Optional[np.ndarray] = None, store: Optional[EmbeddingStore] = None,
                 options: ReportOptions = ReportOptions()) -> dict:
    """Write the report folder for one clustering.

    summary: the run's summary dict (data, method, k, timings, metrics...). keys (N,) str;
    vectors (N, D) float32, the space the method clustered; cluster (N,) int in [0, k);
    confidence (N,) float; labels (N,) int or None. store: the embedding store, whose parts
    name the shards that hold each key (thumbnails); None or a store without shards gives a
    report without images. Returns {"path", "seconds", "bytes", "thumbnails", "map_method", ...}.
    """
    start = time.time()
    n_clusters = int(summary["k"])
    cluster = np.asarray(cluster, dtype=np.int64)
    confidence = np.asarray(confidence, dtype=np.float32)
    if not (len(keys) == len(vectors) == len(cluster) == len(confidence)):
        raise ValueError("report inputs differ in length: keys, vectors, cluster, confidence")
    if len(cluster) and (cluster.min() < 0 or cluster.max() >= n_clusters):
        raise ValueError(f"cluster ids must lie in [0, {n_clusters})")
    temp_dir = f"{report_dir.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    assets = os.path.join(temp_dir, "assets")
    os.makedirs(assets)

    sizes = np.bincount(cluster, minlength=n_clusters)
    sample = bounded_sample(len(cluster), options.map_points, options.seed)
    coords, map_method = plots.embed_2d(vectors[sample], options.map_method, options.seed)
    plots.map_png(os.path.join(assets, "map.png"), coords, cluster[sample], n_clusters,
                  f"{map_method} of {len(sample):,} of {len(cluster):,} embeddings, coloured by cluster")
    plots.sizes_png(os.path.join(assets, "sizes.png"), sizes)
    plots.confidence_png(os.path.join(assets, "confidence.png"), confidence)

    # shards named by the store's parts (none for imported embeddings): thumbnails, class names
    shard_urls = [meta["shard"] for meta in store.part_metadata() if meta.get("shard")] if store is not None else []
    class_names = _class_names(shard_urls, labels)
    table = None
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        table = np.zeros((n_clusters, int(labels.max()) + 1), dtype=np.int64)
        np.add.at(table, (cluster, labels), 1)
        plots.contingency_png(os.path.join(assets, "contingency.png"), table, class_names)

    members = representative_members(vectors, cluster, confidence, n_clusters, options.central, options.uncertain)
    thumbs = {"written": {}, "missing": [], "unreadable": [], "shards_read": 0}
    if shard_urls:
        wanted = np.concatenate([np.concatenate([m["central"], m["uncertain"]]) for m in members.values()])
        thumbs = write_thumbnails(store, dict(zip(keys[wanted], thumbnail_names(wanted))),
                                  os.path.join(temp_dir, "thumbs"), options.thumb_size)

    mean_confidence = np.bincount(cluster, weights=confidence, minlength=n_clusters) / np.maximum(sizes, 1)
    cards = []
    for cid in np.argsort(-sizes, kind="stable"):
        card = {"id": int(cid), "size": int(sizes[cid]), "share": sizes[cid] / max(len(cluster), 1),
                "mean_confidence": float(mean_confidence[cid]),
                "central": _thumbs(members[cid]["central"], keys, confidence, thumbs["written"]),
                "uncertain": _thumbs(members[cid]["uncertain"], keys, confidence, thumbs["written"])}
        if table is not None and sizes[cid]:
            majority = int(table[cid].argmax())
            card.update(majority=class_names[majority], purity=table[cid, majority] / sizes[cid])
        cards.append(card)

    metrics = dict(summary.get("metrics", {}))
    if metrics.get("silhouette") is None and len(cluster) > 1:
        metrics["silhouette"] = silhouette_sample(vectors, cluster, seed=options.seed)
    metrics.setdefault("size_entropy", size_entropy(cluster, n_clusters))
    context = {
        "summary": summary, "metrics": metrics, "cards": cards, "has_labels": table is not None,
        "has_images": bool(thumbs["written"]), "map_method": map_method, "map_points": len(sample),
        "n": len(cluster), "k": n_clusters, "empty_clusters": int((sizes == 0).sum()),
        "thumbs": {key: len(value) for key, value in thumbs.items() if key != "shards_read"},
        "config": json.dumps(summary.get("config", {}), indent=1, default=str),
        "options": options, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with open(os.path.join(temp_dir, "index.html"), "w", encoding="utf-8") as handle:
        handle.write(_template().render(**context))
    _replace_dir(temp_dir, report_dir)
    info = {"path": os.path.join(report_dir, "index.html"), "seconds": round(time.time() - start, 2),
            "bytes": _tree_bytes(report_dir), "thumbnails": len(thumbs["written"]),
            "thumbnails_missing": len(thumbs["missing"]), "thumbnails_unreadable": len(thumbs["unreadable"]),
            "shards_read": thumbs["shards_read"], "map_method": map_method, "map_points": len(sample)}
    log.info("report: %s (%d thumbnails, %.1f MB, %.1fs)", info["path"], info["thumbnails"],
             info["bytes"] / 1e6, info["seconds"])
    return info


def report_run(run_dir: str, options: ReportOptions = ReportOptions()) -> dict:
    """Build `run_dir/report/` from a finished run's summary.json, assignments.parquet and the
    embedding store the summary names."""
    import pyarrow.parquet as pq

    from raycluster.pipeline import load_run_summary, postprocess

    summary = load_run_summary(run_dir)
    store = EmbeddingStore(summary["outputs"]["embeddings"])
    embeddings = store.load()
    assignments = pq.read_table(os.path.join(run_dir, "assignments.parquet")).to_pandas()
    import pandas as pd

    rows = pd.Index(embeddings.keys).get_indexer(assignments["key"])
    if (rows < 0).any() or len(rows) != len(embeddings.keys):
        raise ValueError(f"assignments in {run_dir} do not match the embedding store "
                         f"{store.root} ({len(assignments)} rows vs {len(embeddings.keys)} embeddings)")
    post = summary.get("postprocess", {})
    vectors = postprocess(embeddings.vectors[rows], post.get("pca_dim"), post.get("l2_normalize", False),
                          summary.get("seed", 0))
    labels = embeddings.labels[rows] if embeddings.has_labels else None
    return write_report(os.path.join(run_dir, "report"), summary, embeddings.keys[rows], vectors,
                        assignments["cluster"].to_numpy(), assignments["confidence"].to_numpy(), labels, store,
                        options)


def _thumbs(indices: np.ndarray, keys: np.ndarray, confidence: np.ndarray, written: dict) -> list[dict]:
    return [{"src": f"thumbs/{written[keys[i]]}", "key": str(keys[i]), "confidence": float(confidence[i])}
            for i in indices if keys[i] in written]


def _class_names(shard_urls: list[str], labels: Optional[np.ndarray]) -> list[str]:
    """Class names from the shards' manifest when there is one, else the label ids."""
    count = int(np.max(labels)) + 1 if labels is not None and len(labels) else 0
    names = (read_manifest(os.path.dirname(shard_urls[0])) or {}).get("classes", {}) if shard_urls else {}
    return [str(names.get(str(i), i)) for i in range(count)]


def _template():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("raycluster.report", "templates"), autoescape=select_autoescape())
    env.filters["fmt"] = lambda value, spec=".4f": format(value, spec) if isinstance(value, (int, float)) else "n/a"
    return env.get_template("index.html.j2")


def _replace_dir(temp_dir: str, target: str) -> None:
    """Swap a finished temp folder into place (the old report is removed only after)."""
    old = None
    if os.path.exists(target):
        old = f"{target}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(temp_dir, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _tree_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)
