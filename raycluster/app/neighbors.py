"""jobs/neighbors.py as a library call: embeddings -> sharded index (built or reused) -> k-NN graph."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict

from raycluster.config import NeighborsConfig, RunConfig
from raycluster.data.store import EmbeddingStore
from raycluster.fingerprint import read_fingerprint, reusable, write_fingerprint
from raycluster.io import atomic_write_bytes, url_exists
from raycluster.neighbors.graph import build_knn_graph
from raycluster.neighbors.sharded import MANIFEST, ShardedIndex

log = logging.getLogger(__name__)


def open_or_build_index(store: EmbeddingStore, settings: NeighborsConfig, index_dir: str,
                        seed: int = 0, reuse: str = "auto") -> tuple[ShardedIndex, bool]:
    """The index saved at `index_dir` when it was built with the same settings over the same
    rows (`EmbeddingStore.content_fingerprint`); otherwise a new one, built and saved there.
    Returns (index, built_now)."""
    inputs = {"spec": asdict(settings.index), "normalize": settings.normalize, "shards": settings.shards,
              "seed": seed, "store": store.content_fingerprint()}
    owned = ("shard-*.faiss", "shard-*.keys.parquet", MANIFEST)
    if reusable(index_dir, inputs, "the k-NN index", reuse, owned) and url_exists(f"{index_dir.rstrip('/')}/{MANIFEST}"):
        log.info("reusing the index at %s (same settings and rows)", index_dir)
        return ShardedIndex.load(index_dir, settings.cpus_per_shard, settings.gpus_per_shard), False
    index = ShardedIndex.build(store, settings.index, settings.shards, settings.normalize, settings.cpus_per_shard,
                               settings.gpus_per_shard, seed)
    index.save(index_dir)
    write_fingerprint(index_dir, inputs)
    return index, True


def run_neighbors(cfg: RunConfig) -> dict:
    """Shards -> embeddings (cached) -> sharded index -> k-NN graph Parquet; returns the summary."""
    from raycluster.app.pipeline import ensure_embeddings

    start = time.time()
    settings = cfg.neighbors
    index_dir = settings.index_dir or os.path.join(cfg.output_dir, "index")
    graph_dir = settings.graph_dir or os.path.join(cfg.output_dir, "knn_graph")
    ensure_embeddings(cfg)
    store = EmbeddingStore(cfg.embeddings_path)
    index, built = open_or_build_index(store, settings, index_dir, cfg.seed, cfg.reuse)
    index_seconds = time.time() - start
    graph_inputs = {"index": read_fingerprint(index_dir)["fingerprint"], "k": settings.k}
    if not reusable(graph_dir, graph_inputs, "the k-NN graph", cfg.reuse, owned=("part-*.parquet",)):   # its parts resume only for this index
        write_fingerprint(graph_dir, graph_inputs)
    try:
        graph = build_knn_graph(store, index, graph_dir, settings.k, settings.query_batch, settings.searchers)
    finally:
        index.shutdown()
    summary = {"data": cfg.data.name, "backbone": cfg.backbone.name, "index": settings.name,
               "factory": settings.index.factory_string(index.dim, index.ntotal), "shards": index.counts,
               "vectors": index.ntotal, "dim": index.dim, "k": settings.k, "index_built": built,
               "index_seconds": round(index_seconds, 2), "graph_parts_written": graph.parts_written,
               "graph_parts_reused": graph.parts_skipped, "graph_rows": graph.rows,
               "graph_seconds": round(graph.seconds, 2), "total_seconds": round(time.time() - start, 2),
               "outputs": {"index": index_dir, "graph": graph_dir,
                           "summary": os.path.join(cfg.output_dir, "neighbors_summary.json")}}
    atomic_write_bytes(summary["outputs"]["summary"], json.dumps(summary, indent=1).encode())
    log.info("summary\n%s", "\n".join(f"  {key}: {value}" for key, value in summary.items()))
    return summary
