"""DiFiC's guidance start: how much of the warm-up clusters the clustering head keeps at step 0.

Study, 2026-12-01. Decision it produced: none yet: cross-entropy-fitted prototypes would start guidance closer to the warm-up clusters.

    python bench/studies/dific_head_init.py --run outputs/bench/quality/mnist-test/dific/seed0 --seed 0
    python bench/studies/dific_head_init.py --run RUN --seed 1 --experiment dific_mnist --json rows.jsonl

Reads a finished (or warmed-up) DiFiC run on the MNIST test split (`<run>/dific/warmup.pt`, as
`bench/quality.py` or `jobs/train.py experiment=dific_mnist*` leave it), computes S* for the 10,000
digits in this process (no Ray), redoes the warm-up clusters exactly as the method does (k-means on
a UMAP of S*, `method.manifold`), and scores three partitions against the labels:
- `warmup_clusters`: the clusters guidance is given (the bench's `dific_init_manifold`);
- `mean_direction_head`: argmax of the cosine-prototype head as guidance starts, prototypes = the
  clusters' mean S* directions (what dific_method.py does today);
- `fitted_head`: the same head with its prototypes fitted to the clusters by cross-entropy
  (`--steps` full-batch Adam steps, S* fixed), a candidate start not used by the method.
`agreement` is the share of images a head assigns to their warm-up cluster. Labels only score.
Rows (--json): {"bench", "dataset", "method", "seed", "acc", "nmi", "ari", "agreement"}.
"""
from __future__ import annotations

import sys
from pathlib import Path
import argparse
import os

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import SHARED, append_json_rows  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a DiFiC run's output_dir (holds dific/warmup.pt)")
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (UMAP and k-means restarts)")
    parser.add_argument("--experiment", default="dific_mnist_fast", help="the run's experiment config")
    parser.add_argument("--steps", type=int, default=300, help="cross-entropy steps of the fitted head")
    parser.add_argument("--cache-dir", default="outputs/cache", help="where bench/quality.py stored the pixels")
    parser.add_argument("--json", default=None, help="append the rows as JSON lines")
    args = parser.parse_args(argv)
    warmup = os.path.join(args.run, "dific", "warmup.pt")
    if not os.path.exists(warmup):
        parser.error(f"{warmup} not found: run the DiFiC warm-up first (bench/quality.py --methods dific)")

    import torch
    import torch.nn.functional as F

    from raycluster.config import compose
    from raycluster.data.store import EmbeddingStore
    from raycluster.methods.dific.model import build_dific, cosine_head_logits
    from raycluster.methods.dific.method import unit_rows
    from raycluster.methods.start import cluster_means, manifold_kmeans
    from raycluster.metrics import supervised_metrics
    from raycluster.methods.base import ClusteringMethod

    cfg = compose([f"experiment={args.experiment}", f"seed={args.seed}", f"cache_dir={args.cache_dir}",
                   f"data.source.path={SHARED / 'mnist-test'}", f"output_dir={args.run}"])
    store = EmbeddingStore(cfg.embeddings_path).load()
    method = ClusteringMethod.from_config(cfg.method)
    model = build_dific({**method.base_config(), "guidance": False, "init_from": warmup})
    # the method's own steps (DiFiC.warmup_clusters): unit-length S*, k-means on its UMAP, mean directions
    unit = unit_rows(model.embed(torch.from_numpy(store.vectors.astype(np.float32))).numpy())
    clusters = manifold_kmeans(unit, method.n_clusters, seed=args.seed, **method.manifold)
    # the method falls back to k-means centroids for an empty cluster; none is empty on MNIST
    start = torch.from_numpy(cluster_means(unit, clusters, np.zeros((method.n_clusters, unit.shape[1]), np.float32)))
    unit, temperature = torch.from_numpy(unit), model.config.head_temperature

    prototypes = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.Adam([prototypes], lr=1e-2)
    target = torch.from_numpy(clusters).long()
    for _ in range(args.steps):
        loss = F.cross_entropy(cosine_head_logits(unit, prototypes, temperature), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    partitions = {"warmup_clusters": clusters,
                  "mean_direction_head": cosine_head_logits(unit, start, temperature).argmax(1).numpy(),
                  "fitted_head": cosine_head_logits(unit, prototypes.detach(), temperature).argmax(1).numpy()}
    rows = [{"bench": "dific_head_init", "dataset": "mnist-test", "method": name, "seed": args.seed,
             **{key: round(value, 4) for key, value in supervised_metrics(store.labels, assigned).items()},
             "agreement": round(float((assigned == clusters).mean()), 4)} for name, assigned in partitions.items()]
    print(f"\n{'partition':<22}{'ACC':>8}{'NMI':>8}{'ARI':>8}{'agreement':>11}   (seed {args.seed}, {args.run})")
    for row in rows:
        print(f"{row['method']:<22}{row['acc']:>8.4f}{row['nmi']:>8.4f}{row['ari']:>8.4f}{row['agreement']:>11.4f}")
    append_json_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
