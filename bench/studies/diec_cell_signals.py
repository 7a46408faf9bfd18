"""Two more label-free ways to pick DiEC's (layer, timestep), scored on all rows: stability, and every cell at once.

Study, 2026-12-04. Decision it produced: neither replaces manifold_silhouette; DiEC keeps one searched cell (docs/methods/diec.md).

    python bench/studies/diec_cell_signals.py      # the digits runs bench/quality.py --protocol transfer --methods diec left
    python bench/studies/diec_cell_signals.py --runs outputs/bench/quality/mnist-test/diec/seed0/diec   # ~30 min a run
On the transfer set the search's pick gives a start of 0.86 while one to three cells of 35 give
0.93-0.94 on the search's subset (bench/studies/diec_start_criterion.py). Two signals a user
could compute without labels, tried on a run's pretrained UNet over every cell of diec.yaml's grid
(`methods.diec.model.cell_embeddings` of all rows, DiEC's start: UMAP + the mixture):
- stability: the mean adjusted Rand index between the start fitted with seeds s, s+1, s+2 (a
  cluster that cuts one class in two at an arbitrary place should move between seeds);
- every cell at once: the start on the concatenation of all cells' scaled activations, no choice
  (and without the noisiest timestep's cells).
Per run: the Spearman correlation of stability and of the search's manifold_silhouette (its
search.json, subset rows) with the start's ACC on all rows; the ACC of each one's pick (the
search's tie rule), the best cell's, and the concatenation's (seeds s and s+1; below the last timestep).
Rows (--json): {"bench", "dataset", "seed", "spearman_stability", "spearman_manifold_silhouette",
"acc_stability_pick", "acc_manifold_silhouette_pick", "acc_best_cell", "acc_all_cells",
"acc_all_cells_next_seed", "acc_all_cells_below_last_timestep"}.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py, bench/quality.py
from common import append_json_rows  # noqa: E402

RUNS = [f"outputs/bench/quality/digits/diec/seed{seed}/diec" for seed in (0, 1, 2)]
SHAPES = {"mnist-test": [1, 28, 28], "digits": [1, 8, 8]}
SEEDS = 3   # start fits per cell for its stability


def study_run(run: str, pixels: np.ndarray, labels: np.ndarray, shape: list, seed: int, method) -> dict:
    """Every cell of the grid on all rows of one pretrained UNet -> one summary row."""
    from scipy.stats import spearmanr
    from sklearn.metrics import adjusted_rand_score

    from raycluster.methods.diec.model import cell_embeddings
    from raycluster.methods.start import manifold_kmeans
    from raycluster.metrics import supervised_metrics
    from raycluster.tune.layer_timestep import choose_cell

    manifold = dict(method["manifold"])
    scored = {(row["layer"], row["timestep"]): row
              for row in json.loads((Path(run) / "search" / "search.json").read_text())["rows"]}
    cells, embedded = [], []
    for layer in method["search"]["layers"]:
        for timestep in method["search"]["timesteps"]:
            _, embeddings, _ = cell_embeddings({"n_clusters": 10, "unet": str(Path(run) / "pretrained"),
                                                "image_shape": shape, "layer": layer, "timestep": timestep,
                                                "pool": method["model"]["pool"],
                                                "eval_draws": method["model"]["eval_draws"]}, pixels, seed)
            starts = [manifold_kmeans(embeddings, 10, seed=seed + i, **manifold) for i in range(SEEDS)]
            stability = np.mean([adjusted_rand_score(starts[i], starts[j])
                                 for i in range(SEEDS) for j in range(i + 1, SEEDS)])
            cells.append({"layer": layer, "timestep": timestep, "stability": float(stability),
                          "manifold_silhouette": scored[(layer, timestep)]["manifold_silhouette"],
                          "acc": supervised_metrics(labels, starts[0])["acc"]})
            embedded.append(embeddings)
            print(f"  {layer:>7} t={timestep:<4} stability {stability:.3f}  manifold_silhouette "
                  f"{cells[-1]['manifold_silhouette']:.3f}  start ACC {cells[-1]['acc']:.3f}", flush=True)
    last = max(method["search"]["timesteps"])
    row = {"acc_best_cell": max(cell["acc"] for cell in cells)}
    lower = np.concatenate([e for e, cell in zip(embedded, cells) if cell["timestep"] < last], axis=1)
    row["acc_all_cells_below_last_timestep"] = supervised_metrics(labels, manifold_kmeans(lower, 10, seed=seed, **manifold))["acc"]
    del lower
    every = np.concatenate(embedded, axis=1)
    del embedded
    for criterion in ("stability", "manifold_silhouette"):
        row[f"spearman_{criterion}"] = float(spearmanr([c[criterion] for c in cells], [c["acc"] for c in cells]).statistic)
        row[f"acc_{criterion}_pick"] = choose_cell(cells, criterion, method["search"]["tie_tolerance"])["acc"]
    row["acc_all_cells"], row["acc_all_cells_next_seed"] = (
        supervised_metrics(labels, manifold_kmeans(every, 10, seed=s, **manifold))["acc"] for s in (seed, seed + 1))
    return {key: round(value, 4) for key, value in row.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=RUNS, help="DiEC run folders with pretrained/ and search/")
    parser.add_argument("--cache-dir", default="outputs/cache", help="bench/quality.py's shards and embeddings")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from quality import single_dataset
    from raycluster.config import compose

    method = compose(["method=diec"]).method
    summary = []
    for run in args.runs:
        dataset, seed = re.search(r"([\w-]+)/diec/seed(\d+)", run).groups()
        if not (Path(run) / "pretrained" / "unet" / "config.json").exists() or not (Path(run) / "search" / "search.json").exists():
            print(f"skipped {run}: no pretrained UNet and search.json (run bench/quality.py --methods diec first)")
            continue
        pixels, labels, _, _ = single_dataset(dataset, args)
        print(f"{dataset} seed {seed}: {run}", flush=True)
        row = {"bench": "diec_cell_signals", "dataset": dataset, "seed": int(seed),
               **study_run(run, pixels, labels, SHAPES[dataset], int(seed), method)}
        summary.append(row)
        append_json_rows(args.json, [row])
    print(f"\n{'dataset':<12}{'seed':>5}{'rho stab':>10}{'rho m.sil':>10}{'stab pick':>11}{'m.sil pick':>11}"
          f"{'best cell':>11}{'all cells':>11}{'(seed+1)':>10}{'t<last':>8}")
    for row in summary:
        print(f"{row['dataset']:<12}{row['seed']:>5}{row['spearman_stability']:>10.3f}"
              f"{row['spearman_manifold_silhouette']:>10.3f}{row['acc_stability_pick']:>11.3f}"
              f"{row['acc_manifold_silhouette_pick']:>11.3f}{row['acc_best_cell']:>11.3f}{row['acc_all_cells']:>11.3f}"
              f"{row['acc_all_cells_next_seed']:>10.3f}{row['acc_all_cells_below_last_timestep']:>8.3f}")
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
