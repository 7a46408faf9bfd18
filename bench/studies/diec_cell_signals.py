"""Two more label-free ways to pick DiEC's (layer, timestep), scored on all rows: stability, and every cell at once.

Study, 2026-12-04. Decision it produced: neither replaces manifold_silhouette; DiEC keeps one searched cell (docs/methods/diec.md).

    python bench/studies/diec_cell_signals.py      # the digits runs bench/quality.py --protocol transfer --methods diec left
    python bench/studies/diec_cell_signals.py --all-cells-only --runs outputs/bench/quality/mnist-test/diec/seed0/diec
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
"acc_all_cells_next_seed", "acc_all_cells_below_last_timestep"}; with --all-cells-only (no start
per cell, for MNIST-sized runs) the pick's and the concatenations' ACC only.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py, bench/quality.py
from common import append_json_rows  # noqa: E402
from diec_start_criterion import TIE_TOLERANCE, cell_config, image_shape, run_dataset_seed, study_parser  # noqa: E402   # bench/studies/, the script's folder

RUNS = [f"outputs/bench/quality/digits/diec/seed{seed}/diec" for seed in (0, 1, 2)]
SEEDS = 3   # start fits per cell for its stability


def study_run(run: str, pixels: np.ndarray, labels: np.ndarray, shape: list, seed: int, method,
              all_cells_only: bool = False) -> dict:
    """Every cell of the grid on all rows of one pretrained UNet -> one summary row (with
    `all_cells_only`, no start per cell: the concatenations and the search's pick only)."""
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
            _, embeddings, _ = cell_embeddings(cell_config(run, shape, layer, timestep, method), pixels, seed)
            embedded.append(embeddings)
            if all_cells_only:
                cells.append({"layer": layer, "timestep": timestep, **scored[(layer, timestep)]})
                continue
            starts = [manifold_kmeans(embeddings, 10, seed=seed + i, **manifold) for i in range(SEEDS)]
            stability = np.mean([adjusted_rand_score(starts[i], starts[j])
                                 for i in range(SEEDS) for j in range(i + 1, SEEDS)])
            cells.append({"layer": layer, "timestep": timestep, "stability": float(stability),
                          "manifold_silhouette": scored[(layer, timestep)]["manifold_silhouette"],
                          "acc": supervised_metrics(labels, starts[0])["acc"]})
            print(f"  {layer:>7} t={timestep:<4} stability {stability:.3f}  manifold_silhouette "
                  f"{cells[-1]['manifold_silhouette']:.3f}  start ACC {cells[-1]['acc']:.3f}", flush=True)
    last = max(method["search"]["timesteps"])
    if all_cells_only:
        pick = cells.index(choose_cell(cells, "manifold_silhouette", TIE_TOLERANCE))
        row = {"acc_manifold_silhouette_pick": supervised_metrics(
            labels, manifold_kmeans(embedded[pick], 10, seed=seed, **manifold))["acc"]}
    else:
        row = {"acc_best_cell": max(cell["acc"] for cell in cells)}
        for criterion in ("stability", "manifold_silhouette"):
            row[f"spearman_{criterion}"] = float(spearmanr([c[criterion] for c in cells], [c["acc"] for c in cells]).statistic)
            row[f"acc_{criterion}_pick"] = choose_cell(cells, criterion, TIE_TOLERANCE)["acc"]
    lower = np.concatenate([e for e, cell in zip(embedded, cells) if cell["timestep"] < last], axis=1)
    row["acc_all_cells_below_last_timestep"] = supervised_metrics(labels, manifold_kmeans(lower, 10, seed=seed, **manifold))["acc"]
    del lower
    every = np.concatenate(embedded, axis=1)
    del embedded
    row["acc_all_cells"], row["acc_all_cells_next_seed"] = (
        supervised_metrics(labels, manifold_kmeans(every, 10, seed=s, **manifold))["acc"] for s in (seed, seed + 1))
    return {key: round(value, 4) for key, value in row.items()}


def main(argv=None):
    parser = study_parser(__doc__, "DiEC run folders with pretrained/ and search/", RUNS)
    parser.add_argument("--all-cells-only", action="store_true",
                        help="no start per cell (MNIST-sized runs): the concatenations and the search's pick")
    args = parser.parse_args(argv)

    from quality import single_dataset
    from raycluster.config import compose

    method = compose(["method=diec"]).method
    summary = []
    for run in args.runs:
        dataset, seed = run_dataset_seed(run)
        if not (Path(run) / "pretrained" / "unet" / "config.json").exists() or not (Path(run) / "search" / "search.json").exists():
            print(f"skipped {run}: no pretrained UNet and search.json (run bench/quality.py --methods diec first)")
            continue
        pixels, labels, _, _ = single_dataset(dataset, args)
        print(f"{dataset} seed {seed}: {run}", flush=True)
        row = {"bench": "diec_cell_signals", "dataset": dataset, "seed": seed,
               **study_run(run, pixels, labels, image_shape(dataset), seed, method, args.all_cells_only)}
        summary.append(row)
        append_json_rows(args.json, [row])
    columns = [key for key in summary[0] if key not in ("bench", "dataset", "seed")] if summary else []
    print("\n" + "  ".join(["dataset     ", "seed"] + [key.replace("acc_", "").replace("spearman_", "rho_") for key in columns]))
    for row in summary:
        print("  ".join([f"{row['dataset']:<12}", f"{row['seed']:>4}"]
                        + [f"{row[key]:>{len(key.replace('acc_', '').replace('spearman_', 'rho_'))}.3f}" for key in columns]))
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
