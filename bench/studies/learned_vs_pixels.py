"""Is a label-free choice left between a method's learned rows (DiEC's cell, DiFiC's S*) and the pixels?

DiEC's chosen cell and DiFiC's S* against the raw pixels, and DiEC's best cells concatenated.

Study, 2026-12-05. Decision it informs: none changed; issue 30's gap is left to the features.
Why: docs/methods/diec.md, "What no label-free choice recovers".

    python bench/studies/learned_vs_pixels.py --idx-dataset fashion-mnist=<folder> glyphs=<folder>
                                            # every saved DiEC / DiFiC run of bench/quality.py
    python bench/studies/learned_vs_pixels.py --runs outputs/bench/quality-glyphs/glyphs/dific/seed0/dific \\
        --idx-dataset glyphs=<folder>
Per saved run, on the 1,000 rows DiEC's search scores (its seeded subset), the method's start
(its config's `manifold`, one map: `methods.start.one_map`, with 3 UMAP seeds: the means are
reported) fitted on two sets of rows: the learned rows
(DiEC: the pretrained UNet's activations at the cell its search chose, scaled as DiEC scales them;
DiFiC: the warm-up's S*, unit rows) and on the raw pixel rows, each scored by the search's
label-free criterion (`manifold_separation`: its clusters' silhouette in its own UMAP map) and, from
the labels, by ACC. Were the pixels one more cell of the search, they would win where their
criterion is the higher. With --concat K > 1 (DiEC runs; 3 by default), the start on all rows of the
chosen cell alone and of the K best cells by the criterion concatenated (each block scaled, divided
by sqrt(K)). A run on a set that is not built in is skipped, saying which --idx-dataset it needs.
Rows (--json): {"bench", "method", "dataset", "seed", "run", "learned_criterion", "pixels_criterion",
"learned_acc", "pixels_acc", "pixels_win" (the criterion's pick), "better_by_acc", "learned_knn_agreement",
"pixels_knn_agreement" (each row's 10 nearest rows of the subset sharing its label)} (+ "cells",
"acc_cell", "acc_concat" with --concat); with --pixels-knn only {"bench", "dataset", "rows",
"pixels_knn_agreement_all"}: the pixels' 10-NN label agreement on all rows, cosine, the measure DiFiC
logs for S* (`knn_label_agreement`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py, bench/quality.py
from common import append_json_rows  # noqa: E402
from diec_start_criterion import cell_config, image_shape, study_parser  # noqa: E402   # bench/studies/
from start_cluster_share import dific_words, saved_runs  # noqa: E402   # bench/studies/

RUNS = ([f"outputs/bench/quality/{dataset}/diec/seed{seed}/diec"
         for dataset in ("mnist-test", "digits") for seed in (0, 1, 2)]
        + [f"outputs/bench/quality-tau0/{dataset}/dific/seed{seed}/dific"   # DiFiC's current defaults
           for dataset in ("mnist-test", "digits") for seed in (0, 1, 2)]
        + [f"outputs/bench/quality-fashion/fashion-mnist/{method}/seed{seed}/{method}"   # needs --idx-dataset
           for method in ("diec", "dific") for seed in (0, 1, 2)]
        + [f"outputs/bench/quality-glyphs/glyphs/{method}/seed0/{method}" for method in ("diec", "dific")])


def scored_start(vectors: np.ndarray, labels: np.ndarray, manifold: dict, seed: int, seeds: int) -> tuple[float, float]:
    """The start (one map) on `vectors` (N, D) float32 with UMAP seeds seed .. seed + seeds - 1 ->
    (the mean of their `manifold_separation`, the mean of their ACC)."""
    from raycluster.methods.start import manifold_separation, one_map
    from raycluster.metrics import supervised_metrics

    separation, acc = [], []
    for umap_seed in range(seed, seed + seeds):
        score, clusters = manifold_separation(vectors, 10, umap_seed, manifold=one_map(manifold))
        kept = clusters >= 0
        separation.append(score)
        acc.append(supervised_metrics(labels[kept], clusters[kept])["acc"])
    return round(float(np.mean(separation)), 4), round(float(np.mean(acc)), 4)


def neighbor_agreement(vectors: np.ndarray, labels: np.ndarray, metric: str, k: int = 10) -> float:
    """The share of each row's `k` nearest other rows (by `metric`) that have its label: how much of the
    classes a space holds locally, before any UMAP (DiFiC logs it for S* as knn_label_agreement)."""
    from sklearn.neighbors import NearestNeighbors

    neighbors = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(vectors).kneighbors(vectors)[1][:, 1:]
    return round(float((labels[neighbors] == labels[:, None]).mean()), 4)


def learned_rows(run: str, method: str, dataset: str, seed: int, pixels: np.ndarray, layer_timestep=None):
    """The rows a run's start reads from `pixels` (N, C*H*W): DiEC's cell activations (the search's
    cell, or `layer_timestep`), scaled; DiFiC's S*, unit rows."""
    from raycluster.config import compose
    from raycluster.methods.diec.model import cell_embeddings

    if method == "dific":
        return dific_words(run, pixels)
    if layer_timestep is None:
        search = json.loads((Path(run) / "search" / "search.json").read_text())
        layer_timestep = (search["layer"], search["timestep"])
    config = cell_config(run, image_shape(dataset), *layer_timestep, compose(["method=diec"]).method)
    return cell_embeddings(config, pixels, seed)[1]


def concat_row(run: str, dataset: str, seed: int, pixels: np.ndarray, labels: np.ndarray, manifold: dict,
               count: int) -> dict:
    """DiEC's start on all rows: the chosen cell alone and its `count` best cells concatenated."""
    from raycluster.methods.kmeans.umap import UMAPKMeans
    from raycluster.methods.start import one_map
    from raycluster.metrics import supervised_metrics

    search = json.loads((Path(run) / "search" / "search.json").read_text())
    chosen = (search["layer"], search["timestep"])
    ranked = sorted(search["rows"], key=lambda row: -row["manifold_silhouette"])
    cells = [chosen] + [(row["layer"], row["timestep"]) for row in ranked
                        if (row["layer"], row["timestep"]) != chosen][:count - 1]
    blocks = [learned_rows(run, "diec", dataset, seed, pixels, cell) for cell in cells]
    acc = {}
    for name, vectors in (("cell", blocks[0]), ("concat", np.concatenate(blocks, 1) / np.sqrt(count))):
        clusters = UMAPKMeans(10, seed=seed, **one_map(manifold)).fit(vectors).fit_clusters
        acc[f"acc_{name}"] = round(supervised_metrics(labels, clusters)["acc"], 4)
    return {"cells": [f"{layer} t={timestep}" for layer, timestep in cells], **acc}


def main(argv=None):
    parser = study_parser(__doc__, "DiEC / DiFiC run folders bench/quality.py left", RUNS)
    parser.add_argument("--subset", type=int, default=1000, help="rows scored (DiEC's search.subset)")
    parser.add_argument("--seeds", type=int, default=3, help="UMAP seeds per start (the criterion's noise)")
    parser.add_argument("--pixels-knn", action="store_true",
                        help="only the raw pixels' 10-NN label agreement on all rows (cosine), once per dataset")
    parser.add_argument("--concat", type=int, default=3, help="K > 1: also DiEC's K best cells concatenated, all rows")
    args = parser.parse_args(argv)

    from raycluster.methods.kmeans.umap import UMAPKMeans
    from raycluster.methods.start import one_map

    rows = []
    for run, method, dataset, seed, pixels, labels, manifold in saved_runs(args):
        if args.pixels_knn:   # what DiFiC's logged knn_label_agreement (S*, all rows, cosine) is read against
            if dataset not in {row["dataset"] for row in rows}:
                rows.append({"bench": "learned_vs_pixels", "dataset": dataset, "rows": len(pixels),
                             "pixels_knn_agreement_all": neighbor_agreement(pixels, labels, "cosine")})
                print(rows[-1], flush=True)
                append_json_rows(args.json, rows[-1:])
            continue
        subset = np.random.default_rng(seed).permutation(len(pixels))[:args.subset]   # the search's
        spaces = {"learned": learned_rows(run, method, dataset, seed, pixels[subset]),
                  "pixels": np.ascontiguousarray(pixels[subset], np.float32)}
        learned, raw = (scored_start(vectors, labels[subset], manifold, seed, args.seeds)
                        for vectors in spaces.values())
        metric = UMAPKMeans(10, **one_map(manifold)).metric   # the start's metric, its default included
        row = {"bench": "learned_vs_pixels", "method": method, "dataset": dataset, "seed": seed, "run": run,
               "learned_criterion": learned[0], "pixels_criterion": raw[0], "learned_acc": learned[1],
               "pixels_acc": raw[1], "pixels_win": raw[0] > learned[0],
               "better_by_acc": "pixels" if raw[1] > learned[1] else "learned",
               **{f"{name}_knn_agreement": neighbor_agreement(vectors, labels[subset], metric)
                  for name, vectors in spaces.items()}}
        if args.concat > 1 and method == "diec":
            row.update(concat_row(run, dataset, seed, pixels, labels, manifold, args.concat))
        print("  ".join(f"{k} {v}" for k, v in row.items() if k not in ("bench", "run")), flush=True)
        rows.append(row)
        append_json_rows(args.json, [row])
    if args.pixels_knn:
        return rows
    agree = sum(row["pixels_win"] == (row["better_by_acc"] == "pixels") for row in rows)
    print(f"\nthe criterion picks the better space (by ACC) in {agree} of {len(rows)} runs; "
          f"it picks the pixels in {sum(row['pixels_win'] for row in rows)}, "
          f"the pixels are better in {sum(row['better_by_acc'] == 'pixels' for row in rows)}")
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
