"""jobs/neighbors.py as a library call: embeddings -> sharded index (built or reused) -> k-NN graph."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict

import fsspec

from raycluster.config import NeighborsConfig, RunConfig
from raycluster.data.store import EmbeddingStore
from raycluster.io import atomic_write_bytes, url_exists
from raycluster.neighbors.graph import build_knn_graph
from raycluster.neighbors.sharded import MANIFEST, ShardedIndex, part_rows

log = logging.getLogger(__name__)


def open_or_build_index(store: EmbeddingStore, settings: NeighborsConfig, index_dir: str,
                        seed: int = 0) -> tuple[ShardedIndex, bool]:
    """The index saved at `index_dir` when it was built with the same settings over the same
    rows; otherwise a new one, built and saved there. Returns (index, built_now)."""
    wanted = {"spec": asdict(settings.index), "normalize": settings.normalize,
              "rows": sum(count for _, count in part_rows(store)), "shards": settings.shards}
    manifest_url = f"{index_dir.rstrip('/')}/{MANIFEST}"
    if url_exists(manifest_url):
        with fsspec.open(manifest_url, "r") as handle:
            saved = json.load(handle)
        found = {"spec": saved["spec"], "normalize": saved["normalize"], "rows": sum(saved["counts"]),
                 "shards": len(saved["counts"])}
        if found == wanted:
            log.info("reusing the index at %s", index_dir)
            return ShardedIndex.load(index_dir, settings.cpus_per_shard, settings.gpus_per_shard), False
        log.warning("index at %s was built with other settings or rows; rebuilding", index_dir)
    index = ShardedIndex.build(store, settings.index, settings.shards, settings.normalize, settings.cpus_per_shard,
                               settings.gpus_per_shard, seed)
    index.save(index_dir)
    return index, True


def run_neighbors(cfg: RunConfig) -> dict:
    """Shards -> embeddings (cached) -> sharded index -> k-NN graph Parquet; returns the summary."""
    from raycluster.pipeline import ensure_embeddings

    start = time.time()
    settings = cfg.neighbors
    index_dir = settings.index_dir or os.path.join(cfg.output_dir, "index")
    graph_dir = settings.graph_dir or os.path.join(cfg.output_dir, "knn_graph")
    ensure_embeddings(cfg)
    store = EmbeddingStore(cfg.embeddings_path)
    index, built = open_or_build_index(store, settings, index_dir, cfg.seed)
    index_seconds = time.time() - start
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
