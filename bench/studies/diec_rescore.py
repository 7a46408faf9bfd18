"""How wide should the search's near-tie band be? Measure the criterion's own noise on the near-best cells.

Study, 2026-12-04. Decision it produced: DiEC's search measures its near-tie band (the criterion's seed-to-seed noise on the 5 best cells) instead of a fixed 2%; picking the best mean of the re-scored cells is not adopted (docs/methods/diec.md).

    python bench/studies/diec_rescore.py      # the runs DiEC's quality runs left (MNIST seeds 0-2; digits 0-2)
For each DiEC run folder (`<output-root>/<dataset>/diec/seed<N>/diec`, with `search/search.json` and
`pretrained/`), the `--top` cells by the search's criterion (`manifold_silhouette`) are scored again
through the search's trial (`tune.layer_timestep.score_layer_timestep`, same subset of rows) with
`--seeds` more seeds (fresh noise draws, UMAP and mixture seeds). No labels go into any pick:
- `argmax`: the best single score (the search without a tie rule);
- `fixed_2pct`: `choose_cell` with the fixed band of the previous default (the smallest timestep among
  cells within 2% of the best; the 2% was written after one MNIST seed's labels);
- `noise_band`: the same rule with the band measured: `noise` over the best score (DiEC's search now,
  `tune.layer_timestep.criterion_noise`);
- `rescored`: the best mean over the 1 + `--seeds` scores of the top cells.
`noise` is the pooled seed-to-seed standard deviation of the criterion over the top cells, beside the
gap between the best two cells. The labels then score each pick's start on all rows (what DiEC outputs:
`methods.diec.model.cell_embeddings` + UMAP + the mixture: `diec_start_criterion.start_by_clusterer`).
Rows (--json): {"bench", "dataset", "seed", "noise", "gap", "rule", "layer", "timestep", "criterion_mean",
"acc_start_all_rows"}.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py, bench/quality.py
sys.path.insert(0, str(Path(__file__).resolve().parent))        # diec_start_criterion.py
from common import append_json_rows  # noqa: E402
from diec_start_criterion import image_shape, run_dataset_seed, start_by_clusterer, study_parser, trial_config  # noqa: E402

CRITERION = "manifold_silhouette"


def rescore(run: str, pixels: np.ndarray, shape: list, seed: int, cells: list, seeds: int, method) -> dict:
    """{(layer, timestep): [criterion at seed, seed + 1, ..., seed + seeds]} for `cells` (search.json rows)."""
    from functools import partial

    from raycluster.methods.start import manifold_separation
    from raycluster.tune.layer_timestep import score_layer_timestep

    subset = np.random.default_rng(seed).permutation(len(pixels))[:method["search"]["subset"]]   # the search's
    start_score = partial(manifold_separation, manifold=dict(method["manifold"]))
    scores = {}
    for cell in cells:
        key = (cell["layer"], cell["timestep"])
        scores[key] = [cell[CRITERION]]
        for extra in range(1, seeds + 1):
            config = trial_config(run, shape, cell["layer"], cell["timestep"], seed + extra, method)
            scores[key].append(score_layer_timestep(config, pixels[subset], None, start_score)[CRITERION])
        print(f"  {key[0]} t{key[1]}: {', '.join(f'{s:.4f}' for s in scores[key])}", flush=True)
    return scores


def main(argv=None):
    parser = study_parser(__doc__, "DiEC run folders with search/ and pretrained/")
    parser.add_argument("--top", type=int, default=5, help="cells scored again, best first by the search's score")
    parser.add_argument("--seeds", type=int, default=2, help="extra seeds per cell")
    args = parser.parse_args(argv)

    import json

    from quality import single_dataset
    from raycluster.config import compose
    from raycluster.tune.layer_timestep import choose_cell, criterion_noise

    method = compose(["method=diec"]).method
    summary = []
    for run in args.runs:
        search = Path(run) / "search" / "search.json"
        if not (search.exists() and (Path(run) / "pretrained" / "unet" / "config.json").exists()):
            print(f"skipped {run}: no search.json or pretrained UNet (run bench/quality.py --methods diec first)")
            continue
        dataset, seed = run_dataset_seed(run)
        print(f"{dataset} seed {seed}: {run}", flush=True)
        pixels, labels, _, _ = single_dataset(dataset, args)
        cells = json.loads(search.read_text())["rows"]
        top = sorted(cells, key=lambda c: -c[CRITERION])[:args.top]
        scores = rescore(run, pixels, image_shape(dataset), seed, top, args.seeds, method)
        noise = criterion_noise(list(scores.values()))
        means = {key: float(np.mean(s)) for key, s in scores.items()}
        picks = {"argmax": choose_cell(cells, CRITERION), "fixed_2pct": choose_cell(cells, CRITERION, 0.02),
                 "noise_band": choose_cell(cells, CRITERION, noise / abs(top[0][CRITERION]))}
        best_mean = max(means, key=means.get)
        picks["rescored"] = {"layer": best_mean[0], "timestep": best_mean[1]}
        acc = {}
        rows = []
        for rule, pick in picks.items():
            key = (pick["layer"], pick["timestep"])
            if key not in acc:
                acc[key] = start_by_clusterer(run, pixels, labels, image_shape(dataset), seed, pick, method, ("gmm",))["gmm"]
            rows.append({"bench": "diec_rescore", "dataset": dataset, "seed": seed, "noise": round(noise, 4),
                         "gap": round(top[0][CRITERION] - top[1][CRITERION], 4), "rule": rule, "layer": key[0],
                         "timestep": key[1], "criterion_mean": round(means.get(key, float("nan")), 4),
                         "acc_start_all_rows": round(acc[key], 4)})
            print(f"  {rule:<10} {key[0]} t{key[1]}  start on all rows {acc[key]:.4f}", flush=True)
        summary += rows
        append_json_rows(args.json, rows)
    print(f"\n{'dataset':<12}{'seed':>5}{'noise':>8}{'gap':>8}  {'rule':<11}{'cell':>12}{'mean':>8}{'all rows':>10}")
    for row in summary:
        print(f"{row['dataset']:<12}{row['seed']:>5}{row['noise']:>8.4f}{row['gap']:>8.4f}  {row['rule']:<11}"
              f"{row['layer'] + ' t' + str(row['timestep']):>12}{row['criterion_mean']:>8.4f}"
              f"{row['acc_start_all_rows']:>10.4f}")
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
