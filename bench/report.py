"""Cluster report cost: time, output size and peak memory of jobs/report.py's library call.

    python bench/report.py                       # Tiny-ImageNet (10,100 photos, 202 clusters) and 1M synthetic rows
    python bench/report.py --cases synthetic --synthetic-n 200000 --json rows.jsonl

Cases:
  tinyimagenet  ../shared/data Tiny-ImageNet val photos -> shards -> EfficientNet-Lite0 -> k-means
                (k = 202; the run is cached in --cache-dir, only the report is timed), thumbnails
                read back from the shards
  synthetic     --synthetic-n rows (default 1,000,000) x 128-d from a mixture of 100 Gaussians, an
                embedding store with no shards (no thumbnails) and an assignments table
Each case is built first, then `report_run(run_dir)` is timed alone. Peak RSS is this
process's high-water mark after the case (ru_maxrss), so it includes loading the store.
Rows (--json): {"bench": "report", "dataset", "method", "n", "k", "seconds", "mbytes",
"thumbnails", "map_points", "peak_rss_gib"}.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np

from raycluster.data.store import EmbeddingStore, write_assignments
from raycluster.report import ReportOptions, report_run
from common import SHARED, append_json_rows



def tinyimagenet_run(work: Path, cache_dir: str) -> tuple[str, str]:
    """Run the main job (no report) on all Tiny-ImageNet val photos; returns (run_dir, method)."""
    from raycluster.config import compose
    from raycluster.app.pipeline import run_train

    images = SHARED / "tinyimagenet-val" / "images"
    if not images.exists():
        raise FileNotFoundError(f"{images} not found (see ../shared/data/README)")
    run_dir = work / "tinyimagenet-run"
    cfg = compose(["data=tinyimagenet", f"data.source.path={images}", "backbone=effnet_lite0", "report=false",
                   f"cache_dir={cache_dir}", f"output_dir={run_dir}"])
    summary = run_train(cfg)
    return str(run_dir), summary["method"]


def synthetic_run(work: Path, n: int, dim: int = 128, k: int = 100, part_rows: int = 10_000) -> tuple[str, str]:
    """Write an embedding store (n x dim float32, parts of part_rows, no shards), assignments and a
    summary, as a finished run would leave them; returns (run_dir, method)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(k, dim)).astype(np.float32)
    store = EmbeddingStore(str(work / "synthetic-embeddings"))
    run_dir = work / "synthetic-run"
    keys_all, clusters, confidences = [], [], []
    for start in range(0, n, part_rows):
        rows = min(part_rows, n - start)
        component = rng.integers(0, k, size=rows)
        vectors = centres[component] + 0.5 * rng.normal(size=(rows, dim)).astype(np.float32)
        keys = [f"{i:09d}" for i in range(start, start + rows)]
        store.write_part(f"synthetic-{start // part_rows:05d}", keys, component, vectors, from_shard=False)
        noisy = np.where(rng.uniform(size=rows) < 0.1, rng.integers(0, k, size=rows), component)
        keys_all += keys
        clusters.append(noisy)
        confidences.append(rng.beta(5, 2, size=rows).astype(np.float32))
    os.makedirs(run_dir, exist_ok=True)
    write_assignments(str(run_dir / "assignments.parquet"), np.array(keys_all, dtype=object),
                      np.concatenate(clusters), np.concatenate(confidences))
    summary = {"data": f"synthetic-{n}", "backbone": "none", "method": "synthetic", "k": k, "samples": n,
               "dim": dim, "metrics": {}, "outputs": {"embeddings": store.root}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return str(run_dir), "synthetic"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["tinyimagenet", "synthetic"], choices=["tinyimagenet", "synthetic"])
    parser.add_argument("--synthetic-n", type=int, default=1_000_000)
    parser.add_argument("--work-dir", default="outputs/bench/report")
    parser.add_argument("--cache-dir", default="outputs/cache", help="shards and embeddings, reused across runs")
    parser.add_argument("--map-points", type=int, default=ReportOptions.map_points)
    parser.add_argument("--json", default=None, help="append one row per case as JSON lines")
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in args.cases:
        if case == "tinyimagenet":
            run_dir, method = tinyimagenet_run(work, args.cache_dir)
        else:
            run_dir, method = synthetic_run(work, args.synthetic_n)
        start = time.time()
        info = report_run(run_dir, ReportOptions(map_points=args.map_points))
        seconds = time.time() - start
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
        rows.append({"bench": "report", "dataset": case, "method": method, "n": summary["samples"],
                     "k": summary["k"], "seconds": round(seconds, 2), "mbytes": round(info["bytes"] / 1e6, 2),
                     "thumbnails": info["thumbnails"], "map_points": info["map_points"],
                     "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                     "path": info["path"]})
        print(f"{case}: {rows[-1]}", flush=True)

    print(f"\n{'dataset':<14}{'n':>11}{'k':>6}{'report s':>10}{'size MB':>9}{'thumbs':>8}{'map pts':>9}{'peak GiB':>10}")
    for row in rows:
        print(f"{row['dataset']:<14}{row['n']:>11,}{row['k']:>6}{row['seconds']:>10.1f}{row['mbytes']:>9.2f}"
              f"{row['thumbnails']:>8}{row['map_points']:>9}{row['peak_rss_gib']:>10.2f}")
    if len(rows) == 2:
        print(f"N ratio {rows[1]['n'] / rows[0]['n']:.0f}x -> report time ratio "
              f"{rows[1]['seconds'] / rows[0]['seconds']:.2f}x, size ratio {rows[1]['mbytes'] / rows[0]['mbytes']:.2f}x")
    append_json_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
