"""k-NN graph at scale: sharded FAISS indexes on Ray actors vs exact brute force, in one run.

    python bench/knn_graph.py                         # 1,000,000 x 128, mixture of 1,000 Gaussians
    python bench/knn_graph.py --n 100000 --methods exact ivf_flat --shards 1 --json rows.jsonl
    python bench/knn_graph.py --d 384                 # the 1M x 384 variant

For every index (exact Flat, IVF-Flat at nprobe 16, 8 and 4, IVF-PQ, HNSW; configs/neighbors/*.yaml) and shard
count: build seconds (training + adding, through `ShardedIndex.build`), recall@10 of the sharded
search on --queries sampled points against exact ground truth (self excluded), and the time of
the whole k-NN-10 graph of all N points through the real graph job (`build_knn_graph`: Ray Data
query stream, scatter to shards, exact merge, Parquet parts). For `exact` the whole graph is
extrapolated from the timed sample search (N / queries x sample time), said so in the table.
speedup_vs_exact = exact graph seconds (same shard count) / graph seconds.
Peak RSS: sum of resident memory of this process and every Ray worker process, polled every
0.5 s during the case (shared object-store pages can be counted twice: an upper bound).
Rows (--json): {"bench": "knn_graph", "dataset", "method", "n", "d", "shards", "recall_at_10",
"speedup_vs_exact", "build_seconds", "graph_seconds", "graph_extrapolated", "peak_rss_gib"}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from raycluster.config import compose
from raycluster.data.store import EmbeddingStore
from raycluster.neighbors.graph import build_knn_graph
from raycluster.neighbors.index import merge_topk
from raycluster.neighbors.sharded import ShardedIndex, part_rows, read_vectors, sample_rows
from raycluster.ray_utils import ensure_ray
from common import append_json_rows

# bench method -> (configs/neighbors option, extra overrides)
VARIANTS = {
    "exact": ("exact", []),
    "ivf_flat": ("ivf_flat", []),                                      # nprobe 16 (the config's default)
    "ivf_flat_nprobe8": ("ivf_flat", ["neighbors.index.nprobe=8"]),   # fewer lists visited: faster, lower recall
    "ivf_flat_nprobe4": ("ivf_flat", ["neighbors.index.nprobe=4"]),
    "ivf_pq": ("ivf_pq", []),
    "hnsw": ("hnsw", []),
}
METHODS = list(VARIANTS)


def mixture_store(root: Path, n: int, d: int, centres: int, part_rows_: int = 50_000, seed: int = 0) -> EmbeddingStore:
    """n x d float32 from a mixture of `centres` Gaussians, written once as store parts (reused)."""
    store = EmbeddingStore(str(root))
    if sum(count for _, count in part_rows(store)) == n:
        return store
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d)).astype(np.float32)
    for part, start in enumerate(range(0, n, part_rows_)):
        rows = min(part_rows_, n - start)
        component = rng.integers(0, centres, size=rows)
        vectors = means[component] + 0.6 * rng.normal(size=(rows, d)).astype(np.float32)
        store.write_part(f"mixture-{part:05d}", [f"{i:09d}" for i in range(start, start + rows)], component, vectors,
                         from_shard=False)
    return store


def exact_ground_truth(store: EmbeddingStore, queries: np.ndarray, k: int) -> np.ndarray:
    """(nq, k) global ids of the exact top-k (inner product on unit vectors), part by part."""
    import faiss

    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    offset = 0
    for path, rows in part_rows(store):
        vectors = read_vectors(store, path, normalize=True)[1]
        scores, local = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
        best_scores, best_ids = merge_topk([best_scores, scores], [best_ids, local + offset], k, larger_is_closer=True)
        offset += rows
    return best_ids


class PeakRSS:
    """Polls the summed RSS of this process and all Ray worker processes."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _total(self) -> int:
        import psutil

        total = psutil.Process().memory_info().rss
        for proc in psutil.process_iter(["cmdline", "memory_info"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.pid != os.getpid() and cmdline.startswith("ray::") and proc.info["memory_info"]:
                total += proc.info["memory_info"].rss
        return total

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


def recall_without_self(found: np.ndarray, query_ids: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |found ∩ truth| / k over queries, both lists with the query itself removed."""
    hits = 0
    for row, qid in enumerate(query_ids):
        got = [i for i in found[row] if i != qid][:k]
        want = [i for i in truth[row] if i != qid][:k]
        hits += len(set(got) & set(want))
    return hits / (k * len(query_ids))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--centres", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--shards", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides for every index, e.g. neighbors.index.nprobe=8")
    parser.add_argument("--work-dir", default="outputs/bench/knn_graph")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    work = Path(args.work_dir)
    dataset = f"mixture{args.centres}-{args.n}x{args.d}"
    started = time.time()
    store = mixture_store(work / dataset, args.n, args.d, args.centres)
    print(f"{dataset}: store ready ({time.time() - started:.0f}s)", flush=True)
    query_ids, queries = sample_rows(store, part_rows(store), args.queries, normalize=True, seed=1)
    started = time.time()
    truth = exact_ground_truth(store, queries, args.k + 1)
    print(f"ground truth for {len(queries)} queries: {time.time() - started:.1f}s (in-process faiss.knn)", flush=True)
    ensure_ray(None, None)

    rows, exact_graph = [], {}
    for method in args.methods:
        option, extra = VARIANTS[method]
        settings = compose([f"neighbors={option}", *extra, *args.overrides]).neighbors
        for shards in args.shards:
            graph_dir = work / "graphs" / f"{method}-{shards}"
            shutil.rmtree(graph_dir, ignore_errors=True)
            with PeakRSS() as memory:
                start = time.time()
                index = ShardedIndex.build(store, settings.index, shards, normalize=True)
                build_seconds = time.time() - start
                start = time.time()
                _, found = index.search(queries, args.k + 1)
                sample_seconds = time.time() - start
                recall = recall_without_self(found, query_ids, truth, args.k)
                if method == "exact":
                    graph_seconds, extrapolated = sample_seconds * args.n / len(queries), True
                else:
                    summary = build_knn_graph(store, index, str(graph_dir), args.k, settings.query_batch,
                                              settings.searchers)
                    graph_seconds, extrapolated = summary.seconds, False
                factory = settings.index.factory_string(args.d, args.n)
                index.shutdown()
            shutil.rmtree(graph_dir, ignore_errors=True)
            if method == "exact":
                exact_graph[shards] = graph_seconds
            reference = exact_graph.get(shards)
            row = {"bench": "knn_graph", "dataset": dataset, "method": method, "factory": factory, "n": args.n,
                   "d": args.d, "shards": shards, "recall_at_10": round(recall, 4),
                   "speedup_vs_exact": round(reference / graph_seconds, 2) if reference else None,
                   "build_seconds": round(build_seconds, 1), "graph_seconds": round(graph_seconds, 1),
                   "graph_extrapolated": extrapolated, "sample_search_seconds": round(sample_seconds, 2),
                   "peak_rss_gib": round(memory.peak / 2**30, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    print(f"\n{'method':<18}{'factory':<18}{'shards':>7}{'recall@10':>11}{'build s':>9}{'graph s':>10}"
          f"{'vs exact':>10}{'peak GiB':>10}")
    for row in rows:
        graph = f"{row['graph_seconds']:.0f}{'*' if row['graph_extrapolated'] else ''}"
        speedup = f"{row['speedup_vs_exact']:.1f}x" if row["speedup_vs_exact"] else "n/a"
        print(f"{row['method']:<18}{row['factory']:<18}{row['shards']:>7}{row['recall_at_10']:>11.4f}"
              f"{row['build_seconds']:>9.1f}{graph:>10}{speedup:>10}{row['peak_rss_gib']:>10.2f}")
    print("* extrapolated from the timed search of the query sample (N / queries x its seconds)")
    append_json_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
