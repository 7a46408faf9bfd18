"""Does averaging each row with its nearest neighbours help k-means on Tiny-ImageNet 50 (Lite0)?

Study, 2026-12-03. Decision it produced: no k-NN smoothing of CLUDI's input (issue 31; see bench/README.md).

    python bench/quality.py --methods kmeans --datasets tinyimagenet50 --seed-ids 0   # builds the feature cache
    python bench/studies/knn_smoothing.py [--json PATH]

Rows are the Lite0 features of the 15,000 train photos (fit) and the 2,500 val photos of the same
50 classes (scored), read from bench/quality.py's cache; L2-normalised, PCA to 256 dims (fitted on
train), L2-normalised. A train row becomes normalize(x + mean of its k nearest other train rows), a
val row normalize(x + mean of its k nearest train rows); spherical FAISS k-means (5 restarts) on
the train rows assigns the val rows. ACC on val (Hungarian), seeds 0-2; k = 0 is plain k-means.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import append_json_rows  # noqa: E402


def main(argv=None):
    import faiss

    from raycluster.data.store import EmbeddingStore, unit_rows
    from raycluster.metrics import supervised_metrics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default="outputs/cache")
    parser.add_argument("--neighbours", type=int, nargs="+", default=[0, 5, 10, 20, 50])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    embeddings = Path(args.cache_dir) / "embeddings"
    train = EmbeddingStore(str(embeddings / "tinyimagenet50-train-effnet_lite0")).load()
    val = EmbeddingStore(str(embeddings / "tinyimagenet50-val-effnet_lite0")).load()   # 15,000 and 2,500 rows
    pca = faiss.PCAMatrix(train.vectors.shape[1], 256)
    pca.train(unit_rows(train.vectors))
    fit, scored = unit_rows(pca.apply(unit_rows(train.vectors))), unit_rows(pca.apply(unit_rows(val.vectors)))
    index = faiss.IndexFlatIP(fit.shape[1])
    index.add(fit)
    most = max(args.neighbours)
    _, fit_neighbours = index.search(fit, most + 1)     # the first is the row itself
    _, scored_neighbours = index.search(scored, most)
    rows = []
    for k in args.neighbours:
        fit_k = unit_rows(fit + fit[fit_neighbours[:, 1:k + 1]].mean(1)) if k else fit
        scored_k = unit_rows(scored + fit[scored_neighbours[:, :k]].mean(1)) if k else scored
        accs = []
        for seed in range(args.seeds):
            kmeans = faiss.Kmeans(fit.shape[1], 50, niter=100, nredo=5, seed=seed, spherical=True)
            kmeans.train(fit_k)
            accs.append(supervised_metrics(val.labels, kmeans.index.search(scored_k, 1)[1][:, 0])["acc"])
        rows.append({"study": "knn_smoothing", "neighbours": k, "seeds": args.seeds,
                     "acc_mean": round(float(np.mean(accs)), 4), "acc_by_seed": [round(a, 4) for a in accs]})
        print(f"k={k:<3} val ACC {rows[-1]['acc_mean']:.4f}  by seed {rows[-1]['acc_by_seed']}", flush=True)
    append_json_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
