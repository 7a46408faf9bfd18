"""jobs/predict.py as a library call: a fitted method (saved by jobs/train.py) over every row of an
embedding store -> assignments Parquet parts (key, cluster, confidence, label).

The store may be the one the method was trained on or any other with the same width (new
images embedded later with the same backbone). Rows stream (`raycluster.assign`: in-process for
small stores, a Ray Data actor pool otherwise), so memory holds one batch, never the vectors.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

from raycluster.assign import PoolSettings, assign_rows
from raycluster.data.rows import StoreRows
from raycluster.data.store import EmbeddingStore, EmbeddingWidthError
from raycluster.methods.saving import load_fitted
from raycluster.runs import load_postprocess, load_run_summary

log = logging.getLogger(__name__)


def run_predict(run_dir: str, embeddings_dir: Optional[str] = None, output: Optional[str] = None,
                batch_size: int = 8192, concurrency: int = 1) -> dict:
    """Predict every row of `embeddings_dir` (default: the run's own store) with the run's fitted
    method; writes `output` (default run_dir/predictions.parquet, a folder of parts) atomically;
    returns a summary."""
    from raycluster.ray_utils import ensure_ray

    start = time.time()
    summary = load_run_summary(run_dir)
    method_path = summary["outputs"].get("method")
    if not method_path or not os.path.exists(method_path):
        raise FileNotFoundError(f"{run_dir} has no saved method (method.safetensors); rerun jobs/train.py to create one")
    store = EmbeddingStore(embeddings_dir or summary["outputs"]["embeddings"])
    if not store.part_files():
        raise FileNotFoundError(f"embedding store {store.root!r} has no part files")
    rows = StoreRows(store, load_postprocess(run_dir, summary), batch_rows=batch_size)
    trained_width = summary.get("stored_dim") or (None if summary.get("postprocess", {}).get("pca_dim")
                                                  else summary.get("dim"))
    if trained_width and rows.stored_dim != trained_width:
        raise EmbeddingWidthError(f"embeddings in {store.root!r} have width {rows.stored_dim}; the run's method was "
                                  f"trained on width {trained_width}")
    method = load_fitted(method_path)
    if not rows.local:
        ensure_ray(None, None)
    output = output or os.path.join(run_dir, "predictions.parquet")
    stats, _ = assign_rows(method, rows, output, pool=PoolSettings(batch_size, concurrency))
    result = {"method": summary["method"], "rows": stats.rows, "store": store.root, "output": output,
              "clusters_used": int((stats.sizes > 0).sum()), "seconds": round(time.time() - start, 2)}
    log.info("predict: %d rows with %s -> %s (%.1fs)", result["rows"], result["method"], output, result["seconds"])
    return result
