"""UMAP restarts for DiEC's and DiFiC's starts: does the best-separated of several UMAP seeds, or their
consensus, beat one seed?

Study, 2026-12-05. Decision it informs: `manifold.umap_restarts` (UMAPKMeans) for DiEC's and DiFiC's
starts (docs/methods/kmeans.md, "UMAP restarts").

    python bench/studies/start_restarts.py      # the runs bench/quality.py --methods diec dific left (digits, MNIST)
    python bench/studies/start_restarts.py --runs outputs/bench/quality-tau0/digits/dific/seed1/dific --restarts 6
Per saved run, the start as the method fits it on all rows (its config's `manifold`, smallest-cluster
check included) with UMAP seeds seed, seed + 1, ..., seed + restarts - 1 on the same features
(DiEC: the pretrained UNet's activations at the cell its search chose; DiFiC: the warm-up's S*).
Each fit's `map_separation` (its clusters' silhouette in its own map, no labels) is what a start with
`umap_restarts = R` maximises over the first R seeds; `consensus_clusters` of the first R fits is the
alternative (no labels either); labels score every fit, the pick and the consensus.
Rows (--json): {"bench", "method", "dataset", "seed", "rows", "acc" (per restart), "separation"
(per restart), "neighbors" (per restart), "acc_one" (seed alone), "acc_pick_R" and "acc_consensus_R" for R = 3 and `--restarts`,
"spearman" (separation vs ACC over the restarts)}.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py, bench/quality.py
from common import append_json_rows  # noqa: E402
from diec_start_criterion import cell_config, image_shape, study_parser  # noqa: E402   # bench/studies/
from start_cluster_share import RUNS, dific_words, saved_runs  # noqa: E402   # bench/studies/


def restart_row(vectors: np.ndarray, labels: np.ndarray, manifold: dict, seed: int, restarts: int) -> dict:
    """The start on `vectors` (N, D) float32 fitted with UMAP seeds seed .. seed + restarts - 1 ->
    {"acc", "separation", "neighbors"} lists and the picks a start with umap_restarts would make."""
    from scipy.stats import spearmanr

    from raycluster.methods.kmeans.umap import UMAPKMeans, consensus_clusters, map_separation
    from raycluster.metrics import supervised_metrics

    acc, separation, neighbors, partitions = [], [], [], []
    for restart in range(restarts):
        fitted = UMAPKMeans(10, seed=seed + restart, **{**manifold, "umap_restarts": 1}).fit(vectors)
        partitions.append(fitted.fit_clusters)
        acc.append(round(supervised_metrics(labels, fitted.fit_clusters)["acc"], 4))
        separation.append(round(map_separation(fitted.embedded, fitted.fitted_clusters, seed + restart), 4))
        neighbors.append(fitted.used_neighbors)
    row = {"acc": acc, "separation": separation, "neighbors": neighbors, "acc_one": acc[0]}
    for count in sorted({min(3, restarts), restarts}):
        row[f"acc_pick_{count}"] = acc[int(np.argmax(separation[:count]))]
        row[f"acc_consensus_{count}"] = round(supervised_metrics(labels, consensus_clusters(
            np.stack(partitions[:count]), 10, seed))["acc"], 4)
    row["spearman"] = round(float(spearmanr(separation, acc).statistic), 3) if len(set(acc)) > 1 else None
    return row


def main(argv=None):
    parser = study_parser(__doc__, "DiEC / DiFiC run folders bench/quality.py left", RUNS)
    parser.add_argument("--restarts", type=int, default=5, help="UMAP seeds per run")
    args = parser.parse_args(argv)

    from raycluster.config import compose
    from raycluster.methods.diec.model import cell_embeddings

    diec = compose(["method=diec"]).method
    rows = []
    for run, method, dataset, seed, pixels, labels, manifold in saved_runs(args):
        if method == "dific":
            vectors = dific_words(run, pixels)
        else:
            search = json.loads((Path(run) / "search" / "search.json").read_text())
            config = cell_config(run, image_shape(dataset), search["layer"], search["timestep"], diec)
            _, vectors, _ = cell_embeddings(config, pixels, seed)
        row = {"bench": "start_restarts", "method": method, "dataset": dataset, "seed": seed, "run": run,
               "rows": len(vectors), **restart_row(vectors, labels, manifold, seed, args.restarts)}
        print("  ".join(f"{k} {v}" for k, v in row.items() if k != "bench"), flush=True)
        rows.append(row)
        append_json_rows(args.json, [row])
    picks = [c for c in rows[0] if c.startswith(("acc_pick_", "acc_consensus_"))] if rows else []
    print(f"\n{'method':<7}{'dataset':<12}{'seed':>5}  {'acc_one':>8}" + "".join(f"{c:>12}" for c in picks)
          + f"{'spearman':>10}  acc per restart")
    for row in rows:
        print(f"{row['method']:<7}{row['dataset']:<12}{row['seed']:>5}  {row['acc_one']:>8.3f}"
              + "".join(f"{row[c]:>12.3f}" for c in picks) + f"{str(row['spearman']):>10}  {row['acc']}")
    for column in ["acc_one", *picks]:
        print(f"mean {column}: {np.mean([row[column] for row in rows]):.4f}")
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
