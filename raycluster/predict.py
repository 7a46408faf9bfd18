"""jobs/predict.py as a library call: a fitted method (saved by jobs/train.py) as a Ray Data actor
over every row of an embedding store -> assignments Parquet (key, cluster, confidence).

The store may be the one the method was trained on or any other with the same width (new
images embedded later with the same backbone); rows stream through the actor pool, so memory
holds the assignment columns, not the vectors.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

import numpy as np
import pyarrow as pa

from raycluster.data.store import EmbeddingStore, EmbeddingWidthError, embedding_matrix, write_assignments
from raycluster.methods.base import load_fitted
from raycluster.pipeline import load_run_summary, postprocess

log = logging.getLogger(__name__)


class Predictor:
    """Ray Data callable: a batch of store rows -> key, cluster, confidence."""

    def __init__(self, method_path: str, l2_normalize: bool):
        self.method, self.l2_normalize = load_fitted(method_path), l2_normalize

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = postprocess(embedding_matrix(batch.column("embedding")), None, self.l2_normalize)
        cluster, confidence = self.method.predict(vectors)
        return pa.table({"key": batch.column("key"), "cluster": pa.array(cluster, pa.int64()),
                         "confidence": pa.array(confidence, pa.float32())})


def run_predict(run_dir: str, embeddings_dir: Optional[str] = None, output: Optional[str] = None,
                batch_size: int = 8192, concurrency: int = 1) -> dict:
    """Predict every row of `embeddings_dir` (default: the run's own store) with the run's fitted
    method; writes `output` (default run_dir/predictions.parquet) atomically; returns a summary."""
    from raycluster.ray_utils import ensure_ray

    start = time.time()
    summary = load_run_summary(run_dir)
    method_path = summary["outputs"].get("method")
    if not method_path or not os.path.exists(method_path):
        raise FileNotFoundError(f"{run_dir} has no saved method (method.pkl); rerun jobs/train.py to create one")
    post = summary.get("postprocess", {})
    if post.get("pca_dim"):
        raise ValueError("predict does not support backbone.pca_dim (the PCA is fitted at train time and not saved)")
    store = EmbeddingStore(embeddings_dir or summary["outputs"]["embeddings"])
    parts = store.part_files()
    if not parts:
        raise FileNotFoundError(f"embedding store {store.root!r} has no part files")
    width = store.part_metadata()[0].get("dim")
    if width and summary.get("dim") and width != summary["dim"]:
        raise EmbeddingWidthError(f"embeddings in {store.root!r} have width {width}; the run's method was trained "
                                  f"on width {summary['dim']}")
    ensure_ray(None, None)
    dataset = (store.ray_dataset(parts, ["key", "embedding"])
               .map_batches(Predictor, fn_constructor_args=(os.path.abspath(method_path), post.get("l2_normalize", False)),
                            batch_size=batch_size, batch_format="pyarrow", concurrency=concurrency, num_cpus=1))
    keys, clusters, confidences = [], [], []
    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        keys += batch.column("key").to_pylist()
        clusters.append(batch.column("cluster").to_numpy())
        confidences.append(batch.column("confidence").to_numpy())
    cluster, confidence = np.concatenate(clusters), np.concatenate(confidences)
    order = np.argsort(np.asarray(keys, dtype=object))
    output = output or os.path.join(run_dir, "predictions.parquet")
    write_assignments(output, np.asarray(keys, dtype=object)[order], cluster[order], confidence[order])
    result = {"method": summary["method"], "rows": len(keys), "store": store.root, "output": output,
              "clusters_used": int(len(np.unique(cluster))), "seconds": round(time.time() - start, 2)}
    log.info("predict: %d rows with %s -> %s (%.1fs)", result["rows"], result["method"], output, result["seconds"])
    return result
