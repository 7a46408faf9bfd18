"""What UMAP's smallest-cluster check (UMAPKMeans' min_cluster_share) changes in DiEC's and DiFiC's starts.

Study, 2026-12-04. Decision it produced: DiEC's and DiFiC's starts refit UMAP with a wider
neighbourhood when a cluster holds under a quarter of the mean size (`manifold.min_cluster_share:
0.25`), and DiFiC's start clusters the UMAP map with the mixture, not balanced k-means
(docs/methods/kmeans.md, "A cluster too small to be a class").

    python bench/studies/start_cluster_share.py    # the runs bench/quality.py --methods diec dific left (digits, MNIST)
Per saved run, the start as the method fits it on all rows, without the check and with it:
- DiEC: the pretrained UNet's activations at the cell its search chose (search.json), and at the
  cell the search chose before the check existed (PREVIOUS_CELLS: the held-out-stop runs of
  docs/methods/diec.md), where that differs: the check also runs in the search's trials, so it
  moves the cell as well as the start;
- DiFiC: the warm-up model's S* (distilled/model.pt), unit rows; `before` is the previous start
  (k-means on the UMAP map, balance_tolerance 0.05);
- MNIST, digits-sized: DiEC's MNIST activations, three random 1,797-row samples (the digits' size:
  does the check leave data without a stray sub-mode alone at that size?).
Labels score the starts; the check never reads them.
Rows (--json): {"bench", "method", "dataset", "seed", "cell" (DiEC: "layer t=T"), "pick" (DiEC: "search"
or "previous search"), "sample", "rows", "acc_before" (DiFiC),
"acc_unchecked", "smallest_unchecked", "acc_checked", "smallest_checked", "neighbors_checked"};
smallest = the smallest cluster's rows over the mean cluster size.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py, bench/quality.py
from common import append_json_rows  # noqa: E402
from diec_start_criterion import cell_config, image_shape, run_dataset_seed, study_parser  # noqa: E402   # bench/studies/

RUNS = ([f"outputs/bench/quality/{dataset}/diec/seed{seed}/diec" for dataset, seed in
         [("digits", 0), ("digits", 1), ("digits", 2), ("mnist-test", 0), ("mnist-test", 2)]]
        + [f"outputs/bench/quality/{dataset}/dific/seed{seed}/dific" for dataset, seed in
           [("digits", 0), ("digits", 1), ("digits", 2), ("mnist-test", 0)]])
# The cells DiEC's search chose on these UNets before the check (docs/methods/diec.md, the held-out-stop table)
PREVIOUS_CELLS = {("digits", 0): ("mid", 100), ("digits", 1): ("mid", 100), ("digits", 2): ("up_0", 200),
                  ("mnist-test", 0): ("up_0", 50), ("mnist-test", 2): ("mid", 50)}
SAMPLES = 3          # digits-sized samples of each MNIST DiEC run
SAMPLE_ROWS = 1797


def compare(vectors: np.ndarray, labels: np.ndarray, manifold: dict, seed: int, before: dict | None = None) -> dict:
    """The start on `vectors` (N, D) float32 without the check (min_cluster_share 0) and with
    `manifold`'s -> {"acc_unchecked", "smallest_unchecked", "acc_checked", "smallest_checked",
    "neighbors_checked"} (+ "acc_before": `before`'s settings, if given)."""
    from raycluster.methods.kmeans.umap import UMAPKMeans, smallest_cluster_share
    from raycluster.metrics import supervised_metrics

    row = {}
    fits = {"unchecked": {**manifold, "min_cluster_share": 0.0}, "checked": manifold, **({"before": before} if before else {})}
    for name, settings in fits.items():
        fitted = UMAPKMeans(10, seed=seed, **settings).fit(vectors)
        row[f"acc_{name}"] = round(supervised_metrics(labels, fitted.fit_clusters)["acc"], 4)
        if name != "before":
            row[f"smallest_{name}"] = round(smallest_cluster_share(fitted.fit_clusters, 10), 3)
        if name == "checked":
            row["neighbors_checked"] = fitted.used_neighbors
    return row


def dific_words(run: str, pixels: np.ndarray) -> np.ndarray:
    """A DiFiC run's warm-up S* of `pixels`, unit rows (N, word_dim) float32, as its start reads them."""
    import torch

    from raycluster.data.store import unit_rows
    from raycluster.methods.dific.model import build_dific

    state = torch.load(Path(run) / "distilled" / "model.pt", map_location="cpu", weights_only=True)
    config = {k: v for k, v in state["model_config"].items() if k != "init_from"}
    model = build_dific({**config, "guidance": False})
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        return unit_rows(model.embed(torch.from_numpy(pixels)).numpy())


def saved_runs(args):
    """Each DiEC / DiFiC run folder of `args.runs` bench/quality.py left -> (run, method, dataset, seed,
    pixels (N, C*H*W) float32, labels (N,) int64, the method's `manifold` settings); a run missing the
    stage the studies read is skipped, printed why."""
    from quality import DATASETS, single_dataset
    from raycluster.config import compose

    methods = {name: compose([f"method={name}"]).method for name in ("diec", "dific")}
    for run in args.runs:
        method = "dific" if "/dific/" in run else "diec"
        dataset, seed = run_dataset_seed(run.replace("/dific/", "/diec/"))
        needed = Path(run) / ("distilled/model.pt" if method == "dific" else "search/search.json")
        if not needed.exists():
            print(f"skipped {run}: no {needed.name} (run bench/quality.py --methods {method} first)")
            continue
        if dataset not in DATASETS and dataset not in dict(args.idx_dataset):
            print(f"skipped {run}: {dataset} is not built in (give --idx-dataset {dataset}=<folder>)")
            continue
        pixels, labels, _, _ = single_dataset(dataset, args)
        yield run, method, dataset, seed, pixels, labels, dict(methods[method]["manifold"])


def main(argv=None):
    parser = study_parser(__doc__, "DiEC / DiFiC run folders bench/quality.py left", RUNS)
    args = parser.parse_args(argv)

    from raycluster.config import compose
    from raycluster.methods.diec.model import cell_embeddings

    diec = compose(["method=diec"]).method
    rows = []
    for run, method, dataset, seed, pixels, labels, manifold in saved_runs(args):
        base = {"bench": "start_cluster_share", "method": method, "dataset": dataset, "seed": seed}
        if method == "dific":
            words = dific_words(run, pixels)
            before = {**manifold, "clusterer": "kmeans", "balance_tolerance": 0.05, "min_cluster_share": 0.0}
            found = [{**base, "sample": None, "rows": len(words), **compare(words, labels, manifold, seed, before)}]
        else:
            search = json.loads((Path(run) / "search" / "search.json").read_text())
            picks = {"search": (search["layer"], search["timestep"])}
            if PREVIOUS_CELLS.get((dataset, seed), picks["search"]) != picks["search"]:
                picks["previous search"] = PREVIOUS_CELLS[(dataset, seed)]
            found, embedded = [], {}
            for pick, (layer, timestep) in picks.items():
                config = cell_config(run, image_shape(dataset), layer, timestep, diec)
                _, embeddings, _ = embedded[pick] = cell_embeddings(config, pixels, seed)
                found.append({**base, "cell": f"{layer} t={timestep}", "pick": pick, "sample": None,
                              "rows": len(embeddings), **compare(embeddings, labels, manifold, seed)})
            embeddings = embedded["search"][1]
            if len(embeddings) > 2 * SAMPLE_ROWS:   # digits-sized samples at the search's cell
                for sample in range(SAMPLES):
                    chosen = np.random.default_rng(100 + sample).choice(len(embeddings), SAMPLE_ROWS, replace=False)
                    found.append({**base, "cell": found[0]["cell"], "pick": "search", "sample": sample, "rows": SAMPLE_ROWS,
                                  **compare(embeddings[chosen], labels[chosen], manifold, seed)})
        for row in found:
            print("  ".join(f"{k} {v}" for k, v in row.items() if k != "bench"), flush=True)
        rows += found
        append_json_rows(args.json, found)
    columns = ["acc_before", "acc_unchecked", "smallest_unchecked", "acc_checked", "smallest_checked", "neighbors_checked"]
    print("\nmethod  dataset       seed  cell          pick             sample   rows  " + "  ".join(columns))
    for row in rows:
        print(f"{row['method']:<7} {row['dataset']:<12} {row['seed']:>5}  {row.get('cell', ''):<12}  {row.get('pick', ''):<15}  "
              f"{str(row['sample']):>6}  {row['rows']:>5}  "
              + "  ".join(f"{row.get(c, float('nan')):>{len(c)}}" for c in columns))
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
