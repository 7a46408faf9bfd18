"""The cluster report: one static folder (index.html + PNGs + thumbnails) per run.

    report/index.html        run summary, metrics, diagnostics, map, one card per cluster
    report/assets/*.png      map, cluster sizes, confidence, cluster-vs-class heat map
    report/thumbs/*.jpg      central and least-confident members of each cluster

Relative links only and no scripts from anywhere: it opens from disk, offline. The folder is
built under a temporary name and renamed into place, so a crash never leaves half a report.
Output size and memory are bounded whatever N is: counts come summed over every row, vectors
only for a uniform sample (the map, the members shown, the silhouette), thumbnails are capped
per cluster and read only from the shards that hold them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from raycluster.data.shards import read_manifest
from raycluster.data.store import EmbeddingStore
from raycluster.assign import AssignmentStats
from raycluster.metrics import count_entropy, silhouette_sample
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
    sample_rows: int = 20000     # rows whose vectors the report reads (map, members, silhouette)
    max_cards: int = 100         # cluster cards (largest first); the rest are counted, not drawn
    thumbnail_parts: int = 64    # members shown come from sampled rows of at most this many store parts
                                 # (shards), so reading thumbnails back costs that many shards at any N
    seed: int = 0


@dataclass
class ReportData:
    """What a report is drawn from, bounded whatever N is: counts over every row (`stats`) and a
    uniform sample of rows. keys (m,) str; vectors (m, D) float32 in the space the method
    clustered; cluster (m,) int64; confidence (m,) float32."""

    stats: AssignmentStats
    keys: np.ndarray
    vectors: np.ndarray
    cluster: np.ndarray
    confidence: np.ndarray
    levels: list = field(default_factory=list)   # hierarchy above level 1 (assign.level_counts), top last
    parts: Optional[np.ndarray] = None   # (m,) store part of each sampled row (bounds the shards read back)

    @classmethod
    def from_arrays(cls, keys, vectors, cluster, confidence, n_clusters: int, labels=None) -> "ReportData":
        """Every row in memory (small runs, tests): counts from all of them, the sample = all."""
        cluster = np.asarray(cluster, dtype=np.int64)
        confidence = np.asarray(confidence, dtype=np.float32)
        if not (len(keys) == len(vectors) == len(cluster) == len(confidence)):
            raise ValueError("report inputs differ in length: keys, vectors, cluster, confidence")
        stats = AssignmentStats(n_clusters)
        stats.update(cluster, confidence, np.full(len(cluster), -1) if labels is None else np.asarray(labels, np.int64))
        return cls(stats, np.asarray(keys, dtype=object), vectors, cluster, confidence)

    @classmethod
    def from_sample(cls, stats: AssignmentStats, sample, picked: dict) -> "ReportData":
        """Join a `StoreRows.sample` (keys, vectors) with the assignments of the same keys."""
        import pandas as pd

        where = pd.Index(picked["key"]).get_indexer(sample.keys)
        keep = where >= 0
        return cls(stats, sample.keys[keep], sample.vectors[keep], np.asarray(picked["cluster"], np.int64)[where[keep]],
                   np.asarray(picked["confidence"], np.float32)[where[keep]],
                   parts=None if sample.parts is None else sample.parts[keep])


def write_report(report_dir: str, summary: dict, data: ReportData, store: Optional[EmbeddingStore] = None,
                 options: ReportOptions = ReportOptions()) -> dict:
    """Write the report folder for one clustering.

    summary: the run's summary dict (data, method, k, timings, metrics...). data: counts over
    every row and a sample of rows (`ReportData`). store: the embedding store, whose parts name
    the shards that hold each key (thumbnails); None or a store without shards gives a report
    without images. Returns {"path", "seconds", "bytes", "thumbnails", "map_method", ...}.
    """
    start = time.time()
    n_clusters = int(summary["k"])
    stats = data.stats
    if len(data.cluster) and (data.cluster.min() < 0 or data.cluster.max() >= n_clusters):
        raise ValueError(f"cluster ids must lie in [0, {n_clusters})")
    temp_dir = f"{report_dir.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    assets = os.path.join(temp_dir, "assets")
    os.makedirs(assets)

    sizes, n_rows = stats.sizes, stats.rows
    sample = bounded_sample(len(data.cluster), options.map_points, options.seed)
    coords, map_method = plots.embed_2d(data.vectors[sample], options.map_method, options.seed)
    plots.map_png(os.path.join(assets, "map.png"), coords, data.cluster[sample], n_clusters,
                  f"{map_method} of {len(sample):,} of {n_rows:,} embeddings, coloured by cluster")
    plots.sizes_png(os.path.join(assets, "sizes.png"), sizes)
    plots.confidence_png(os.path.join(assets, "confidence.png"), stats.confidence_hist)

    # shards named by the store's parts (none for imported embeddings): thumbnails, class names
    shard_urls = [meta["shard"] for meta in store.part_metadata() if meta.get("shard")] if store is not None else []
    table = stats.table if stats.has_labels else None
    class_names = _class_names(shard_urls, table.shape[1] if table is not None else 0)
    if table is not None:
        plots.contingency_png(os.path.join(assets, "contingency.png"), table, class_names)

    eligible = _rows_in_few_parts(data.parts, len(data.cluster), options.thumbnail_parts, options.seed)
    members = representative_members(data.vectors[eligible], data.cluster[eligible], data.confidence[eligible],
                                     n_clusters, options.central, options.uncertain)
    members = {cid: {name: eligible[rows] for name, rows in chosen.items()} for cid, chosen in members.items()}
    shown = np.argsort(-sizes, kind="stable")[:options.max_cards]
    thumbs = {"written": {}, "missing": [], "unreadable": [], "shards_read": 0}
    if shard_urls:
        wanted = np.concatenate([np.concatenate([members[c]["central"], members[c]["uncertain"]]) for c in shown])
        thumbs = write_thumbnails(store, dict(zip(data.keys[wanted], thumbnail_names(wanted))),
                                  os.path.join(temp_dir, "thumbs"), options.thumb_size)

    mean_confidence = stats.confidence_sum / np.maximum(sizes, 1)
    cards = []
    for cid in shown:
        card = {"id": int(cid), "size": int(sizes[cid]), "share": sizes[cid] / max(n_rows, 1),
                "mean_confidence": float(mean_confidence[cid]),
                "central": _thumbs(members[cid]["central"], data.keys, data.confidence, thumbs["written"]),
                "uncertain": _thumbs(members[cid]["uncertain"], data.keys, data.confidence, thumbs["written"])}
        if table is not None and sizes[cid]:
            majority = int(table[cid].argmax())
            card.update(majority=class_names[majority], purity=table[cid, majority] / sizes[cid])
        cards.append(card)

    metrics = dict(summary.get("metrics", {}))
    if metrics.get("silhouette") is None and len(data.cluster) > 1:
        metrics["silhouette"] = silhouette_sample(data.vectors, data.cluster, seed=options.seed)
    metrics.setdefault("size_entropy", count_entropy(sizes, n_clusters))
    context = {
        "summary": summary, "metrics": metrics, "cards": cards, "has_labels": table is not None,
        "has_images": bool(thumbs["written"]), "map_method": map_method, "map_points": len(sample),
        "n": n_rows, "sample_rows": len(data.cluster), "k": n_clusters, "empty_clusters": int((sizes == 0).sum()),
        "thumbs": {key: len(value) for key, value in thumbs.items() if key != "shards_read"},
        "config": json.dumps(summary.get("config", {}), indent=1, default=str),
        "options": options, "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cards_hidden": int(len(sizes) - len(shown)), "hierarchy": _hierarchy(data.levels, sizes),
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
    """Build `run_dir/report/` from a finished run's summary.json, its assignments (streamed for
    the counts) and a sample of the embedding store the summary names."""
    from raycluster.assign import level_counts, read_assignment_stats
    from raycluster.curation.sampling import tree_from_assignments
    from raycluster.data.rows import StoreRows
    from raycluster.runs import load_postprocess, load_run_summary

    summary = load_run_summary(run_dir)
    store = EmbeddingStore(summary["outputs"]["embeddings"])
    rows = StoreRows(store, load_postprocess(run_dir, summary))
    fraction = min(1.0, options.sample_rows / max(rows.n_rows, 1))
    stats, picked = read_assignment_stats(summary["outputs"]["assignments"], int(summary["k"]), fraction, options.seed)
    if stats.rows != rows.n_rows:
        raise ValueError(f"assignments in {run_dir} do not match the embedding store "
                         f"{store.root} ({stats.rows} rows vs {rows.n_rows} embeddings)")
    data = ReportData.from_sample(stats, rows.sample(options.sample_rows, options.seed), picked)
    _, parents = tree_from_assignments(summary["outputs"]["assignments"])
    data.levels = level_counts(stats, parents) if parents else []
    return write_report(os.path.join(run_dir, "report"), summary, data, store, options)


def _rows_in_few_parts(parts: Optional[np.ndarray], n: int, limit: int, seed: int) -> np.ndarray:
    """Indices of the n sampled rows that lie in at most `limit` store parts (all rows when the
    sample spans no more, or parts are unknown; parts chosen by a seeded shuffle)."""
    if parts is None or len(np.unique(parts)) <= limit:
        return np.arange(n)
    chosen = np.random.default_rng(seed).permutation(np.unique(parts))[:limit]
    return np.flatnonzero(np.isin(parts, chosen))


def _hierarchy(levels: list, leaf_sizes: np.ndarray, children_shown: int = 50) -> list:
    """Top level first: [{"id", "size", "children": [{"id", "size"}...] (largest first)}] for the
    top level and the level below it (the drill-down); [] for a flat clustering."""
    if not levels:
        return []
    top = levels[-1]
    below_sizes = levels[-2]["sizes"] if len(levels) > 1 else leaf_sizes
    out = []
    for cid in np.argsort(-top["sizes"], kind="stable"):
        children = np.flatnonzero(top["parent"] == cid)
        children = children[np.argsort(-below_sizes[children], kind="stable")]
        out.append({"id": int(cid), "size": int(top["sizes"][cid]), "level": len(levels) + 1,
                    "children": [{"id": int(c), "size": int(below_sizes[c])} for c in children[:children_shown]],
                    "more": max(0, len(children) - children_shown)})
    return out


def _thumbs(indices: np.ndarray, keys: np.ndarray, confidence: np.ndarray, written: dict) -> list[dict]:
    return [{"src": f"thumbs/{written[keys[i]]}", "key": str(keys[i]), "confidence": float(confidence[i])}
            for i in indices if keys[i] in written]


def _class_names(shard_urls: list[str], count: int) -> list[str]:
    """Class names from the shards' manifest when there is one, else the label ids."""
    names = (read_manifest(os.path.dirname(shard_urls[0])) or {}).get("classes", {}) if shard_urls else {}
    return [str(names.get(str(i), i)) for i in range(count)]


def _template():
    from jinja2 import Environment, PackageLoader

    # Always escape: keys and class names come from file names, which can hold markup.
    env = Environment(loader=PackageLoader("raycluster.report", "templates"), autoescape=True)
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
