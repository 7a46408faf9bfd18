"""DiEC's label-free search of the Clustering-optimal Layer and Timestep (COL, COT) with Ray Tune.

Each trial is one (layer, timestep): noise-averaged pooled UNet activations of a fixed random
subset (`raycluster.features.unet.unet_features`), scored by label-free criteria (`CRITERIA`):
of k-means with K clusters on the activations standardised per dimension, the Calinski-Harabasz
index (`chi`, between- over within-cluster dispersion; the paper's OTS criterion) and the mean
silhouette (`silhouette`, Euclidean); and, given the method's `start_score` (DiEC's:
`methods.start.manifold_separation`), the mean silhouette of the start's own clusters in its UMAP
space (`manifold_silhouette`): the cell is scored by how well separated the clusters
DiEC will output are, where they are made. The choice is the smallest timestep among the cells
whose score is within `tie_tolerance` of the best (`choose_cell`); with `tie_tolerance=None` that
band is measured: the criterion's seed-to-seed noise on the `noise_cells` best cells, scored again
with `noise_seeds` more seeds (`criterion_noise`).
Labels, when given, only add `acc` (k-means') and `acc_start` (the start's) to the trial's report.

Which criterion, with the figures: docs/methods/diec.md."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)


CRITERIA = {"chi": "Calinski-Harabasz index", "silhouette": "mean silhouette",
            "manifold_silhouette": "mean silhouette of the start's clusters in its UMAP space"}


# (embeddings (N, D), n_clusters, seed) -> (separation score, (N,) int clusters): the method's own
# start fitted on a trial's activations. A callable handed in, so tune never imports methods.
StartScore = Callable[[np.ndarray, int, int], tuple]


def check_criterion(criterion: str, has_start: bool = False) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"diec: unknown search criterion {criterion!r}; known: {sorted(CRITERIA)}")
    if criterion == "manifold_silhouette" and not has_start:
        raise ValueError("diec: search criterion manifold_silhouette scores the start's UMAP clusters: "
                         "set method.manifold, or choose criterion silhouette")
    return criterion


def choose_cell(rows: Sequence[dict], criterion: str, tie_tolerance: float = 0.0) -> dict:
    """The chosen trial row: among rows whose `criterion` is within `tie_tolerance` (relative) of
    the best, the one at the smallest timestep (then the higher score). Why: a near tie in a
    criterion measured on a 1,000-image subset is noise, while a smaller t is a less noisy
    embedding (the fine-tune sees one noise draw per step). 0: the plain arg-max."""
    best = max(row[criterion] for row in rows)
    near = [row for row in rows if row[criterion] >= best - tie_tolerance * abs(best)]
    return min(near, key=lambda row: (row["timestep"], -row[criterion]))


def criterion_noise(scores: Sequence[Sequence[float]]) -> float:
    """The pooled seed-to-seed standard deviation of a criterion: scores, one list per cell of its
    scores under different seeds (at least two each)."""
    return float(np.sqrt(np.mean([np.var(cell, ddof=1) for cell in scores])))


def clusterability(embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> tuple[dict, np.ndarray]:
    """(N, D) float -> ({"chi", "silhouette"} of k-means on the standardised embeddings, (N,) clusters)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    standardised = (embeddings - embeddings.mean(0)) / (embeddings.std(0) + 1e-6)
    clusters = KMeans(n_clusters, n_init=3, random_state=seed).fit_predict(standardised)
    return {"chi": float(calinski_harabasz_score(standardised, clusters)),
            "silhouette": float(silhouette_score(standardised, clusters))}, clusters


def score_layer_timestep(config: dict, pixels: np.ndarray, labels: Optional[np.ndarray] = None,
                         start_score: Optional[StartScore] = None) -> dict:
    """One trial: config has unet, image_shape, layer, timestep, draws, n_clusters, seed, threads.
    pixels: (n, C*H*W) float32 in [0, 1]; start_score: see StartScore, or None.
    Returns {"chi", "silhouette", "manifold_silhouette" (nan without start_score), "acc", "acc_start"
    (nan without labels), "dim"}."""
    import torch

    from raycluster.diffusion.unet import build_scheduler, load_unet, to_model_input
    from raycluster.features.unet import unet_features
    from raycluster.metrics import supervised_metrics

    torch.set_num_threads(int(config.get("threads", 1)))
    unet = load_unet(config["unet"]).eval()
    scheduler = build_scheduler(source=config["unet"] if isinstance(config["unet"], str) else None)
    generator = torch.Generator().manual_seed(int(config["seed"]))
    # torch.tensor copies: the object store hands over read-only arrays
    images = to_model_input(torch.tensor(pixels), config["image_shape"], unet.config.sample_size)
    with torch.no_grad():
        embeddings = unet_features(unet, scheduler, images, [config["layer"]], int(config["timestep"]),
                                   int(config["draws"]), generator, int(config.get("pool", 1)),
                                   batch_size=500)[config["layer"]].numpy()
    scores, clusters = clusterability(embeddings, int(config["n_clusters"]), int(config["seed"]))
    start = None
    scores["manifold_silhouette"] = float("nan")
    if start_score is not None:
        scores["manifold_silhouette"], start = start_score(embeddings, int(config["n_clusters"]), int(config["seed"]))
    scored = labels is not None and (labels >= 0).all()
    acc = supervised_metrics(labels, clusters)["acc"] if scored else float("nan")
    acc_start = supervised_metrics(labels, start)["acc"] if scored and start is not None else float("nan")
    return {**scores, "acc": acc, "acc_start": acc_start, "dim": embeddings.shape[1]}


def _trial(config: dict, pixels=None, labels=None, start_score=None) -> None:
    import ray.tune

    ray.tune.report(score_layer_timestep({**config, **config.get("cell", {})}, pixels, labels, start_score))


@dataclass
class SearchResult:
    layer: str
    timestep: int
    rows: list          # one dict per trial: layer, timestep, CRITERIA's scores, acc, acc_start
    heatmaps: list      # PNG paths

    @property
    def best_by_acc(self) -> Optional[dict]:
        """The cell whose output scores best by the labels: the start's ACC when the start was scored."""
        key = label_score(self.rows)
        scored = [r for r in self.rows if not np.isnan(r[key])]
        return max(scored, key=lambda r: r[key]) if scored else None


def label_score(rows: Sequence[dict]) -> str:
    """"acc_start" (the start's ACC) when the trials scored the start, else "acc" (k-means')."""
    return "acc_start" if any(not np.isnan(r.get("acc_start", float("nan"))) for r in rows) else "acc"


def search_layer_timestep(pixels: np.ndarray, unet, image_shape: Sequence[int], layers: Sequence[str],
                          timesteps: Sequence[int], n_clusters: int, output_dir: str,
                          labels: Optional[np.ndarray] = None, subset: int = 2000, draws: int = 2,
                          seed: int = 0, pool: int = 1, cpus_per_trial: float = 1.0,
                          max_concurrent: int = 2, criterion: str = "silhouette",
                          tie_tolerance: Optional[float] = 0.0, noise_cells: int = 5, noise_seeds: int = 2,
                          start_score: Optional[StartScore] = None) -> SearchResult:
    """Grid (layers x timesteps) as Ray Tune trials on a random `subset` of the rows; writes
    `search.json` + heatmaps under `output_dir` and returns `choose_cell` of `criterion`
    (a key of CRITERIA) with `tie_tolerance` (relative; None: the criterion's measured noise
    over the best, from `noise_cells` x `noise_seeds` more trials); `start_score` (see
    StartScore) adds `manifold_silhouette`.
    unet: a diffusers folder / hub name, or a config dict (random init: tests only)."""
    import json

    import ray.tune

    from raycluster.io import atomic_write_bytes

    check_criterion(criterion, start_score is not None)
    if isinstance(unet, str) and os.path.exists(unet):
        unet = os.path.abspath(unet)   # trials run in their own working directories
    rows_subset = np.random.default_rng(seed).permutation(len(pixels))[:subset]
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, pixels=np.ascontiguousarray(pixels[rows_subset], np.float32),
                                 labels=None if labels is None else np.asarray(labels)[rows_subset],
                                 start_score=start_score),
        {"cpu": cpus_per_trial})
    param_space = {"layer": ray.tune.grid_search(list(layers)), "timestep": ray.tune.grid_search(list(timesteps)),
                   "unet": unet, "image_shape": list(image_shape), "draws": draws, "n_clusters": n_clusters,
                   "seed": seed, "pool": pool, "threads": max(1, int(cpus_per_trial))}
    rows = _run_trials(trainable, param_space, criterion, output_dir, "layer_timestep", ["layer", "timestep"],
                       len(layers) * len(timesteps), max_concurrent)
    noise = None
    if tie_tolerance is None:   # measure the band: the best cells again, with other seeds
        top = sorted(rows, key=lambda row: -row[criterion])[:noise_cells]
        cells = [{"layer": row["layer"], "timestep": row["timestep"]} for row in top]
        again = _run_trials(trainable, {**param_space, "layer": None, "timestep": None,
                                        "cell": ray.tune.grid_search(cells),
                                        "seed": ray.tune.grid_search([seed + k for k in range(1, noise_seeds + 1)])},
                            criterion, output_dir, "layer_timestep_noise", ["cell", "seed"],
                            len(cells) * noise_seeds, max_concurrent)
        for row in top:
            row[f"{criterion}_other_seeds"] = [r[criterion] for r in again
                                               if (r["layer"], r["timestep"]) == (row["layer"], row["timestep"])]
        noise = criterion_noise([[row[criterion], *row[f"{criterion}_other_seeds"]] for row in top])
        tie_tolerance = noise / abs(top[0][criterion]) if top[0][criterion] else 0.0   # choose_cell's band is relative
        log.warning("layer x timestep search: the criterion's seed-to-seed noise on the %d best cells is %.4f (%.1f%% of the "
                    "best score): cells within it count as ties", len(top), noise, 100 * tie_tolerance)
    best = choose_cell(rows, criterion, tie_tolerance)
    heatmaps = plot_heatmaps(rows, list(layers), list(timesteps), output_dir, criterion, best)
    result = SearchResult(best["layer"], best["timestep"], rows, heatmaps)
    atomic_write_bytes(os.path.join(output_dir, "search.json"), json.dumps(
        {"layer": result.layer, "timestep": result.timestep, "criterion": criterion, "tie_tolerance": tie_tolerance,
         "criterion_noise": noise, "subset": len(rows_subset),
         "draws": draws, "rows": rows, "best_by_acc": result.best_by_acc, "heatmaps": heatmaps}, indent=1).encode())
    return result


def _run_trials(trainable, param_space: dict, criterion: str, output_dir: str, name: str, shown: list, total: int,
                max_concurrent: int) -> list[dict]:
    """One Ray Tune grid of search trials -> one row per trial: layer, timestep, CRITERIA's scores, acc, acc_start."""
    import ray.tune

    from raycluster.tune.progress import trial_lines

    tuner = ray.tune.Tuner(trainable, param_space=param_space,
                           tune_config=ray.tune.TuneConfig(metric=criterion, mode="max", max_concurrent_trials=max_concurrent),
                           run_config=ray.tune.RunConfig(
                               name=name, storage_path=os.path.abspath(output_dir), verbose=0,
                               callbacks=[trial_lines(total, shown, [*CRITERIA, "acc"])]))
    results = tuner.fit()
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"{len(errors)} search trials failed; first: {errors[0]}")
    cells = [{**r.config, **r.config.get("cell", {})} for r in results]
    return [{"layer": cell["layer"], "timestep": int(cell["timestep"]),
             **{key: float(r.metrics[key]) for key in (*CRITERIA, "acc", "acc_start")}, "dim": int(r.metrics["dim"])}
            for cell, r in zip(cells, results)]


def plot_heatmaps(rows: list, layers: list, timesteps: list, output_dir: str, criterion: str = "silhouette",
                  best: Optional[dict] = None) -> list:
    """`heatmap_<criterion>.png` and, when labels were given, `heatmap_acc.png`;
    the label-free choice (`best`, default `choose_cell` without a tolerance: the arg-max) is
    boxed on both so their agreement is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raycluster.io import atomic_write_bytes

    best = best or choose_cell(rows, criterion)
    paths = []
    acc = label_score(rows)
    acc_title = "ACC of the start (labels; not used)" if acc == "acc_start" else "ACC (labels; not used)"
    for metric, title in ((criterion, f"{CRITERIA[criterion]} (label-free criterion)"), (acc, acc_title)):
        grid = np.full((len(layers), len(timesteps)), np.nan)
        for row in rows:
            grid[layers.index(row["layer"]), timesteps.index(row["timestep"])] = row[metric]
        if np.isnan(grid).all():
            continue
        figure, axis = plt.subplots(figsize=(1.0 + 0.9 * len(timesteps), 1.0 + 0.5 * len(layers)))
        image = axis.imshow(grid, cmap="viridis", aspect="auto")
        for i in range(len(layers)):
            for j in range(len(timesteps)):
                axis.text(j, i, f"{grid[i, j]:.0f}" if metric == "chi" else f"{grid[i, j]:.3g}",
                          ha="center", va="center", fontsize=7, color="white")
        axis.add_patch(plt.Rectangle((timesteps.index(best["timestep"]) - 0.5, layers.index(best["layer"]) - 0.5),
                                     1, 1, fill=False, edgecolor="red", linewidth=2))
        axis.set_xticks(range(len(timesteps)), [str(t) for t in timesteps])
        axis.set_yticks(range(len(layers)), layers)
        axis.set_xlabel("timestep")
        axis.set_ylabel("UNet block")
        axis.set_title(title, fontsize=9)
        figure.colorbar(image, ax=axis)
        figure.tight_layout()
        path = os.path.join(output_dir, f"heatmap_{'acc' if metric == acc else metric}.png")
        import io

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths
