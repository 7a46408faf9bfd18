"""CLUDI's neighbour view on Tiny-ImageNet 50 (Lite0): how many neighbours, and what predict's draws see.

Study, 2026-12-03. Decision it produced: `neighbor_view: 5` in configs/method/cludi.yaml; predict's draws go round the row and its neighbours.

    python bench/quality.py --methods kmeans --datasets tinyimagenet50 --seed-ids 0   # builds the feature cache
    python bench/studies/cludi_neighbor_view.py [--json PATH]

The `cludi` recipe (configs/method/cludi.yaml) trained in one process with the loop a Ray Train
worker runs (raycluster.train.loop), on the 15,000 train photos' Lite0 features from
bench/quality.py's cache, as CLUDI.fit_rows prepares them: PCA to 256 dims, the UMAP + k-means
warm start, every train row's `neighbor_view` nearest other train rows (BankNeighbors).
Each fitted model then assigns the 2,500 val photos three ways: `row` (every draw sees the row),
`row_and_neighbours` (the draws go round the row and its k nearest train rows: the recipe's
predict) and `neighbours` (the draws see only the neighbours). This study looked at val labels:
it is the record of that choice, not a label-free criterion.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import append_json_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None):
    import torch
    import yaml

    from raycluster.data.postprocess import Postprocess
    from raycluster.data.store import EmbeddingStore, unit_rows
    from raycluster.methods.cludi.model import CludiModel, build_cludi
    from raycluster.methods.kmeans.umap import UMAPKMeans
    from raycluster.metrics import size_entropy, supervised_metrics
    from raycluster.neighbors.manifold import BankNeighbors
    from raycluster.train.loop import OptimConfig, make_optimizer, train_epochs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", default="outputs/cache")
    parser.add_argument("--neighbours", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    recipe = yaml.safe_load((ROOT / "configs" / "method" / "cludi.yaml").read_text())
    embeddings = Path(args.cache_dir) / "embeddings"
    train = EmbeddingStore(str(embeddings / "tinyimagenet50-train-effnet_lite0")).load()
    val = EmbeddingStore(str(embeddings / "tinyimagenet50-val-effnet_lite0")).load()   # 15,000 and 2,500 rows
    seed = args.seed
    projection = Postprocess.fit(train.vectors, recipe["input_dim"], False, seed)
    fit, scored = projection(train.vectors), projection(val.vectors)
    start = UMAPKMeans(50, seed=seed, **recipe["manifold"]).fit(unit_rows(fit))
    initial = start.predict(unit_rows(fit))[0]
    rows = []
    for k in args.neighbours:
        torch.manual_seed(seed)             # as a Ray Train worker of rank 0
        np.random.seed(seed * 1000)
        model = build_cludi({**recipe["model"], "n_clusters": 50, "feature_dim": fit.shape[1], "neighbor_view": k})
        bank = BankNeighbors(fit, k)
        model.attach_context(bank=fit)
        model.attach_row_columns(initial_clusters=torch.from_numpy(initial), neighbors=torch.from_numpy(bank(fit)))
        optim = OptimConfig(**{**recipe["optim"], "betas": tuple(recipe["optim"]["betas"])})
        began = time.time()
        train_epochs(model, torch.from_numpy(fit), optim, make_optimizer(model, optim),
                     math.ceil(len(fit) / optim.batch_size), seed=seed, row_ids=torch.arange(len(fit)))
        fit_seconds = time.time() - began
        model.eval()
        around = torch.from_numpy(fit[bank(scored)])                                  # (n, k, F)
        views = {"row": lambda rows: CludiModel.prediction_views(rows, None, model.config.eval_draws),
                 "row_and_neighbours": lambda rows: CludiModel.prediction_views(rows, around, model.config.eval_draws),
                 "neighbours": lambda rows: around[:, torch.arange(model.config.eval_draws) % k].transpose(0, 1)}
        for name, make in views.items():
            torch.manual_seed(seed)
            with torch.no_grad():
                _, logits = model.sample(model.denoiser, make(torch.from_numpy(scored)), model.config.eval_steps)
            cluster = logits.mean(0).argmax(-1).numpy()
            scores = supervised_metrics(val.labels, cluster)
            rows.append({"study": "cludi_neighbor_view", "neighbor_view": k, "predict_views": name, "seed": seed,
                         **{key: round(value, 4) for key, value in scores.items()},
                         "size_entropy": round(size_entropy(cluster, 50), 4), "fit_seconds": round(fit_seconds, 1)})
            print(f"k={k:<3} {name:<20} val ACC {scores['acc']:.4f}  NMI {scores['nmi']:.4f}", flush=True)
    append_json_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
