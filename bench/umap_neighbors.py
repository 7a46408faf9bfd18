"""UMAP with umap-learn's NN-descent vs with an exact FAISS k-NN graph (raycluster.neighbors.manifold).

Each UMAP runs in a fresh Python process, as in a job or a Ray task, so NN-descent's numba
compilation is counted where it is paid. Same rows, same UMAP settings, same seed:
  umap_kmeans   MNIST test pixels (10,000 x 784, scaled to [0, 1]), 10 dims, min_dist 0, cosine:
                the umap_kmeans baseline and DiEC/DiFiC's start; k-means (FAISS, 10 restarts) on
                the embedding, ACC against the labels
  report_map    the same rows' first 5,000, 2 dims, min_dist 0.1, euclidean: the report's map
Columns: seconds (whole UMAP fit in that process), knn_recall (NN-descent's graph against the
exact one), acc (umap_kmeans only).

    python bench/umap_neighbors.py [--json bench/results/umap_neighbors.jsonl]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np

from common import SHARED, append_json_rows

CHILD = r"""
import json, sys, time
import numpy as np
settings, knn, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = np.load(settings.pop("rows"))
start = time.perf_counter()
if knn == "exact_faiss":
    from raycluster.neighbors.manifold import umap_embedding
    coords = umap_embedding(rows, **settings)
    graph = None
else:
    import umap
    reducer = umap.UMAP(random_state=settings.pop("seed"), n_jobs=1, **settings)
    coords = reducer.fit_transform(rows)
    graph = reducer._knn_indices
seconds = time.perf_counter() - start
np.savez(out, coords=coords, graph=graph if graph is not None else np.zeros(0))
print(json.dumps({"seconds": seconds}))
"""


def run_umap(rows_path: str, settings: dict, knn: str, out: str) -> tuple[float, np.ndarray, np.ndarray]:
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps({"rows": rows_path, **settings}), knn, out],
                          check=True, capture_output=True, text=True)
    result = np.load(out)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"], result["coords"], result["graph"]


def graph_recall(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact k-NN graph's edges that the approximate graph also has."""
    hits = sum(len(set(a) & set(e)) for a, e in zip(approximate.tolist(), exact.tolist()))
    return hits / exact.size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default=str(SHARED / "mnist-test"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="outputs/bench/umap_neighbors")
    parser.add_argument("--json", default=None, help="append result rows as JSON lines")
    args = parser.parse_args(argv)

    import os
    import tempfile

    from raycluster.data.builtin import mnist_arrays
    from raycluster.methods.kmeans.method import FaissKMeans
    from raycluster.metrics import supervised_metrics
    from raycluster.neighbors.manifold import exact_knn

    os.makedirs(args.work, exist_ok=True)
    images, labels = mnist_arrays(args.mnist)
    rows = (images.reshape(len(images), -1) / 255.0).astype(np.float32)
    cases = {
        "umap_kmeans": (rows, dict(n_components=10, n_neighbors=15, min_dist=0.0, metric="cosine", seed=args.seed)),
        "report_map": (rows[:5000], dict(n_components=2, n_neighbors=15, min_dist=0.1, metric="euclidean",
                                         seed=args.seed)),
    }
    table = []
    for case, (vectors, settings) in cases.items():
        rows_path = os.path.join(args.work, f"{case}.npy")
        np.save(rows_path, vectors)
        exact_graph, _ = exact_knn(vectors, settings["n_neighbors"], settings["metric"])
        for knn in ("nn_descent", "exact_faiss"):
            out = tempfile.mktemp(suffix=".npz", dir=args.work)
            seconds, coords, graph = run_umap(rows_path, settings, knn, out)
            row = {"bench": "umap_neighbors", "case": case, "rows": len(vectors), "dims": settings["n_components"],
                   "metric": settings["metric"], "knn": knn, "seconds": round(seconds, 1),
                   "knn_recall": round(graph_recall(graph, exact_graph), 4) if graph.size else 1.0}
            if case == "umap_kmeans":
                clusters, _ = FaissKMeans(10, n_init=10, seed=args.seed).fit(coords).predict(coords)
                row["acc"] = round(supervised_metrics(labels[: len(vectors)], clusters)["acc"], 4)
            table.append(row)
            print(f"{case:<12} {knn:<12} {row['seconds']:>7.1f} s  recall {row['knn_recall']:.4f}"
                  + (f"  ACC {row['acc']:.4f}" if "acc" in row else ""), flush=True)
    for case in cases:
        pair = {row["knn"]: row for row in table if row["case"] == case}
        print(f"{case}: exact FAISS graph {pair['nn_descent']['seconds'] / pair['exact_faiss']['seconds']:.1f}x "
              "faster than NN-descent (fresh process each)")
    append_json_rows(args.json, table)
    return table


if __name__ == "__main__":
    sys.exit(main() and 0)
