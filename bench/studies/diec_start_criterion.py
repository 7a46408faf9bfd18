"""Which label-free score finds the (layer, timestep) whose start DiEC outputs best? Per pretrained UNet.

Study, 2026-12-04. Decision it produced: DiEC's search criterion is manifold_silhouette and its start clusters the UMAP map with a Gaussian mixture (docs/methods/diec.md).

    python bench/studies/diec_start_criterion.py      # the runs DiEC's quality runs left (MNIST seeds 0-2; digits 0-2)
    python bench/studies/diec_start_criterion.py --rescore --runs outputs/bench/quality/digits/diec/seed1/diec
Every cell of configs/method/diec.yaml's grid as DiEC's own search scored it (its search.json
rows: with labels the search adds them), or with --rescore, through the search's trial again
(`raycluster.tune.layer_timestep.score_layer_timestep` with `methods.start.manifold_separation`) on the
search's subset of the run's pretrained UNet: the label-free scores (`silhouette` and `chi` of k-means on the cell, and
`manifold_silhouette`, the silhouette of the start's own clusters in its UMAP space) and, from the
labels, `acc` (k-means') and `acc_start` (the start's: what DiEC outputs, fitted on the subset).
Per UNet and criterion: Spearman correlation with acc_start, the cell `choose_cell` picks (the
search's tie rule) and its acc_start, beside the best acc_start of the grid. With --clusterers,
the start on all rows at the cells `silhouette` and `manifold_silhouette` pick, its UMAP map
clustered by k-means (the previous start, balance_tolerance 0.05) and by the mixture (now).
A run folder is `<output-root>/<dataset>/diec/seed<N>/diec` with `search/` and `pretrained/` in
it (`bench/quality.py --methods diec` leaves them); the dataset and seed are read from that path.
Rows (--json): {"bench", "dataset", "seed", "criterion", "spearman_acc_start", "layer", "timestep",
"acc_start", "best_acc_start", "start_acc_kmeans", "start_acc_gmm" (--clusterers)}; the cells' own
scores stay in each run's search/search.json.
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
from quality import IDX_SHAPE, IMAGE_SHAPES, add_idx_dataset_option  # noqa: E402

RUNS = [f"outputs/bench/quality/{dataset}/diec/seed{seed}/diec" for dataset in ("mnist-test", "digits") for seed in (0, 1, 2)]
CRITERIA = ("silhouette", "chi", "manifold_silhouette")
# The search's near-tie band when these studies' rows were made (a fixed 2%); DiEC now measures it
# per search (diec.yaml's tie_tolerance: null, bench/studies/diec_rescore.py).
TIE_TOLERANCE = 0.02


def image_shape(dataset: str) -> list:
    """(C, H, W) of a dataset's pixel rows, as bench/quality.py runs the image methods on it."""
    return IMAGE_SHAPES.get(dataset, IDX_SHAPE)


def run_dataset_seed(run: str) -> tuple[str, int]:
    """A DiEC run folder `<output-root>/<dataset>/diec/seed<N>/diec` -> (dataset, N)."""
    dataset, seed = re.search(r"([\w-]+)/diec/seed(\d+)", run).groups()
    return dataset, int(seed)


def study_parser(doc: str, runs_help: str, runs: list = RUNS) -> argparse.ArgumentParser:
    """The arguments every DiEC study over saved runs takes: --runs (default `runs`), --cache-dir, --json."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=runs, help=runs_help)
    parser.add_argument("--cache-dir", default="outputs/cache", help="bench/quality.py's shards and embeddings")
    add_idx_dataset_option(parser)   # runs on a dataset of yours: the --idx-dataset its bench/quality.py run had
    parser.add_argument("--json", default=None)
    return parser


def cell_config(run: str, shape: list, layer: str, timestep: int, method) -> dict:
    """The DiEC model config of `run`'s pretrained UNet at one cell, as DiEC's start builds it
    (`methods.diec.model.cell_embeddings` takes it)."""
    return {"n_clusters": 10, "unet": str(Path(run) / "pretrained"), "image_shape": shape, "layer": layer,
            "timestep": timestep, "pool": method["model"]["pool"], "eval_draws": method["model"]["eval_draws"]}


def trial_config(run: str, shape: list, layer: str, timestep: int, seed: int, method) -> dict:
    """The search trial's config (`tune.layer_timestep.score_layer_timestep`) for `run`'s pretrained UNet at one cell."""
    return {"unet": str(Path(run) / "pretrained"), "image_shape": shape, "layer": layer, "timestep": timestep,
            "draws": method["search"]["draws"], "n_clusters": 10, "seed": seed, "pool": method["model"]["pool"],
            "threads": 2}


def score_cells(run: str, pixels: np.ndarray, labels: np.ndarray, shape: list, seed: int, method) -> list[dict]:
    """Every (layer, timestep) of diec.yaml's grid through the search's trial -> one dict per cell."""
    from functools import partial

    from raycluster.methods.start import manifold_separation
    from raycluster.tune.layer_timestep import score_layer_timestep

    subset = np.random.default_rng(seed).permutation(len(pixels))[:method["search"]["subset"]]   # the search's
    cells = []
    for layer in method["search"]["layers"]:
        for timestep in method["search"]["timesteps"]:
            config = trial_config(run, shape, layer, timestep, seed, method)
            start_score = partial(manifold_separation, manifold=dict(method["manifold"]))
            cells.append({"layer": layer, "timestep": timestep,
                          **score_layer_timestep(config, pixels[subset], labels[subset], start_score)})
            print("  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in cells[-1].items()),
                  flush=True)
    return cells


def start_by_clusterer(run: str, pixels: np.ndarray, labels: np.ndarray, shape: list, seed: int, cell: dict,
                       method, clusterers: tuple = ("kmeans", "gmm")) -> dict:
    """The start DiEC fits on all rows at `cell` (its `model_config`: the embeddings, scaled), once
    per clusterer of the UMAP map in `clusterers`: {"kmeans": ACC (the previous start:
    balance_tolerance 0.05), "gmm": ACC (DiEC's start now)}."""
    from raycluster.methods.diec.model import cell_embeddings
    from raycluster.methods.kmeans.umap import UMAPKMeans
    from raycluster.metrics import supervised_metrics

    _, embeddings, _ = cell_embeddings(cell_config(run, shape, cell["layer"], cell["timestep"], method), pixels, seed)
    settings = {"kmeans": {"clusterer": "kmeans", "balance_tolerance": 0.05}, "gmm": {"clusterer": "gmm"}}
    return {name: supervised_metrics(labels, UMAPKMeans(10, seed=seed, **{**method["manifold"], **settings[name]})
                                     .fit(embeddings).fit_clusters)["acc"] for name in clusterers}


def main(argv=None):
    parser = study_parser(__doc__, "DiEC run folders with a pretrained/ UNet")
    parser.add_argument("--clusterers", action="store_true",
                        help="also fit the start on all rows at the cells silhouette and manifold_silhouette pick, "
                             "with k-means and with the mixture on the UMAP map")
    parser.add_argument("--rescore", action="store_true", help="score the cells again from the pretrained UNet")
    args = parser.parse_args(argv)

    from scipy.stats import spearmanr

    from quality import single_dataset
    from raycluster.config import compose
    from raycluster.tune.layer_timestep import choose_cell

    method = compose(["method=diec"]).method
    summary = []
    for run in args.runs:
        dataset, seed = run_dataset_seed(run)
        search = Path(run) / "search" / "search.json"
        if args.rescore or args.clusterers:   # both read the rows; loaded once
            pixels, labels, _, _ = single_dataset(dataset, args)
        if args.rescore and (Path(run) / "pretrained" / "unet" / "config.json").exists():
            print(f"{dataset} seed {seed}: {run}", flush=True)
            cells = score_cells(run, pixels, labels, image_shape(dataset), seed, method)
        elif not args.rescore and search.exists() and "manifold_silhouette" in json.loads(search.read_text())["rows"][0]:
            cells = json.loads(search.read_text())["rows"]
        else:
            print(f"skipped {run}: no {'pretrained UNet' if args.rescore else 'search.json with every criterion'} "
                  "(run bench/quality.py --methods diec first)")
            continue
        rows = []
        best = max(c["acc_start"] for c in cells)
        for criterion in CRITERIA:
            pick = choose_cell(cells, criterion, TIE_TOLERANCE)
            rho = float(spearmanr([c[criterion] for c in cells], [c["acc_start"] for c in cells]).statistic)
            rows.append({"bench": "diec_start_criterion", "dataset": dataset, "seed": seed, "criterion": criterion,
                         "spearman_acc_start": round(rho, 3), "layer": pick["layer"], "timestep": pick["timestep"],
                         "acc_start": round(pick["acc_start"], 4), "best_acc_start": round(best, 4)})
        if args.clusterers:
            for row in rows:
                if row["criterion"] != "chi":
                    by = start_by_clusterer(run, pixels, labels, image_shape(dataset), seed, row, method)
                    row.update({f"start_acc_{name}": round(acc, 4) for name, acc in by.items()})
        summary += rows
        append_json_rows(args.json, rows)
    print(f"\n{'dataset':<12}{'seed':>5}  {'criterion':<21}{'spearman':>9}{'picks':>14}{'acc_start':>10}{'best':>7}"
          + ("   all rows: k-means / mixture" if args.clusterers else ""))
    for row in summary:
        print(f"{row['dataset']:<12}{row['seed']:>5}  {row['criterion']:<21}{row['spearman_acc_start']:>9.3f}"
              f"{row['layer'] + ' t' + str(row['timestep']):>14}{row['acc_start']:>10.3f}{row['best_acc_start']:>7.3f}"
              + (f"   {row['start_acc_kmeans']:.3f} / {row['start_acc_gmm']:.3f}" if "start_acc_gmm" in row else ""))
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
