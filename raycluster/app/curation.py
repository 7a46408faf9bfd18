"""jobs/curate.py and jobs/dedup.py as library calls over a finished jobs/train.py run folder."""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raycluster.curation.dedup import DedupConfig, dedup_store
from raycluster.curation.sampling import SamplingConfig, curate, write_curated
from raycluster.io import atomic_write_bytes
from raycluster.runs import load_postprocess, load_run_summary

log = logging.getLogger(__name__)


def run_curate(run_dir: str, config: SamplingConfig, output: str | None = None) -> dict:
    """Balanced sample of `config.size` keys from the run's assignments -> `output`
    (default run_dir/curated.parquet): key, cluster (level 1), cluster_l<i> when hierarchical."""
    start = time.time()
    summary = load_run_summary(run_dir)
    table = curate(summary["outputs"]["assignments"], config)
    output = output or os.path.join(run_dir, "curated.parquet")
    write_curated(table, output)
    top = [c for c in table.column_names if c.startswith("cluster_l")]
    top_column = top[-1] if top else "cluster"
    result = {"rows": table.num_rows, "output": output, "top_level_clusters": len(set(table.column(top_column).to_pylist())),
              "seconds": round(time.time() - start, 2)}
    log.info("curate: %d keys over %d top-level clusters -> %s (%.1fs)", result["rows"], result["top_level_clusters"],
             output, result["seconds"])
    return result


def run_dedup(run_dir: str, config: DedupConfig, output_dir: str | None = None) -> dict:
    """Near-duplicate removal over the run's store, searched within its level-1 clusters -> output_dir (default
    run_dir/dedup/): kept.parquet, removed.parquet (key, cluster, group), summary.json, index.html."""
    from raycluster.data.rows import StoreRows
    from raycluster.data.store import EmbeddingStore
    from raycluster.methods.saving import load_fitted

    start = time.time()
    summary = load_run_summary(run_dir)
    rows = StoreRows(EmbeddingStore(summary["outputs"]["embeddings"]), load_postprocess(run_dir, summary))
    method = load_fitted(summary["outputs"]["method"])
    if not rows.local:
        from raycluster.ray_utils import ensure_ray

        ensure_ray(None, None)
    output_dir = output_dir or os.path.join(run_dir, "dedup")
    os.makedirs(output_dir, exist_ok=True)
    # Written batch by batch (temporary names, renamed when complete): the caller holds the
    # duplicate pairs, never every key.
    schema = pa.schema([("key", pa.string()), ("cluster", pa.int64()), ("group", pa.int64())])
    paths = {name: os.path.join(output_dir, f"{name}.parquet") for name in ("kept", "removed")}
    writers = {name: pq.ParquetWriter(f"{path}.tmp", schema) for name, path in paths.items()}
    counts, groups = {"kept": 0, "removed": 0}, set()
    records = os.path.join(output_dir, "records.parquet.tmp")
    for part in dedup_store(method, rows, config, records):
        table = pa.table({"key": pa.array(list(part["key"]), pa.string()), "cluster": pa.array(part["cluster"], pa.int64()),
                          "group": pa.array(part["group"], pa.int64())})
        kept_mask = np.asarray(part["kept"], bool)
        in_group = np.asarray(part["group"]) >= 0
        for name, mask in (("kept", kept_mask), ("removed", ~kept_mask)):
            writers[name].write_table(table.filter(pa.array(mask)))
            counts[name] += int(mask.sum())
        groups.update(np.unique(part["group"][in_group]).tolist())
    os.remove(records)
    n_groups = len(groups)
    for name, writer in writers.items():
        writer.close()
        os.replace(f"{paths[name]}.tmp", paths[name])
    total = counts["kept"] + counts["removed"]
    result = {"rows": total, "kept": counts["kept"], "removed": counts["removed"],
              "removed_share": counts["removed"] / max(1, total), "groups": n_groups,
              "threshold": config.threshold, "keep": config.keep, "probes": config.probes,
              "background_rank": config.background_rank, "whiten": config.whiten, "output_dir": output_dir,
              "seconds": round(time.time() - start, 2)}
    result["page"] = write_group_page(output_dir, paths["kept"], paths["removed"], rows.store)
    atomic_write_bytes(os.path.join(output_dir, "summary.json"), json.dumps(result, indent=1).encode())
    log.info("dedup: %d of %d rows removed (%.2f%%) in %d groups at threshold %.3f -> %s", result["removed"],
             result["rows"], 100 * result["removed_share"], n_groups, config.threshold, output_dir)
    return result


def write_group_page(output_dir: str, kept_path: str, removed_path: str, store, groups: int = 8, size: int = 96) -> str:
    """dedup/index.html: the first `groups` duplicate groups, one thumbnail row each (kept first),
    read back from kept.parquet and removed.parquet by group id. Keys and names are escaped
    (autoescape on): a file name cannot inject into the page."""
    from jinja2 import Environment

    from raycluster.report.thumbnails import write_thumbnails

    chosen = []
    for batch in pq.ParquetFile(removed_path).iter_batches(columns=["group"]):
        chosen = sorted(set(chosen) | set(batch.column("group").to_pylist()))[:groups]
        if len(chosen) == groups:
            break
    if chosen:
        kept, removed = (pq.read_table(path, filters=[("group", "in", chosen)]) for path in (kept_path, removed_path))
    else:
        kept = removed = pq.read_schema(kept_path).empty_table()
    members = pa.concat_tables([kept, removed]).to_pandas()   # rows of the chosen groups only
    kept_keys = set(kept.column("key").to_pylist())
    rows = [[(key, key in kept_keys) for key in sorted(members[members["group"] == g]["key"], key=lambda k: k not in kept_keys)]
            for g in chosen]
    wanted = [key for row in rows for key, _ in row]
    names = {key: f"t{i:05d}.jpg" for i, key in enumerate(wanted)}
    thumbs = write_thumbnails(store, names, os.path.join(output_dir, "thumbs"), size)["written"] if wanted else {}
    page = Environment(autoescape=True).from_string(PAGE).render(
        rows=[[{"key": key, "kept": is_kept, "src": f"thumbs/{thumbs[key]}" if key in thumbs else None}
               for key, is_kept in row] for row in rows])
    path = os.path.join(output_dir, "index.html")
    atomic_write_bytes(path, page.encode())
    return path


PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>raycluster dedup: duplicate groups</title>
<style>body{font:14px system-ui,sans-serif;margin:1em 2em}.row{display:flex;gap:6px;margin:8px 0;align-items:flex-end}
figure{margin:0;font-size:11px;color:#555;max-width:100px;overflow-wrap:anywhere}.kept img{outline:3px solid #3a3}</style></head>
<body><h1>Duplicate groups</h1><p>One row per group; the kept member (green) first.</p>
{% for row in rows %}<div class="row">{% for item in row %}<figure class="{{ 'kept' if item.kept else 'removed' }}">
{% if item.src %}<img src="{{ item.src }}" alt="{{ item.key }}" width="96">{% endif %}<figcaption>{{ item.key }}</figcaption></figure>
{% endfor %}</div>{% endfor %}</body></html>
"""
