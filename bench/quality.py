"""Clustering quality: methods x datasets, ACC / NMI / ARI (mean and std over seeds) and fit time.

    python bench/quality.py                                   # every method on every dataset it applies to
    python bench/quality.py --methods kmeans --datasets imagenet50-dino-vits16 --seeds 3 --json rows.jsonl
    python bench/quality.py --datasets tinyimagenet-effnet-lite0 --tiny-classes 202   # all 202 classes

Datasets (real data from ../shared/data, or $RAYCLUSTER_SHARED_DATA; digits ship with scikit-learn):
  imagenet50-dino-vits16     2,500 x 384 DINO ViT-S/16 embeddings, K = 50 (used as given)
  digits                     1,797 8x8 digits through the pipeline (shards -> pixels), K = 10
  mnist-test                 10,000 MNIST test digits through the pipeline (pixels), K = 10
  tinyimagenet-effnet-lite0  Tiny-ImageNet val photos -> shards -> pretrained EfficientNet-Lite0
                             features (cached in --cache-dir between runs); first 20 classes by default
  tinyimagenet50             the paper protocol on real photos: every method is fitted on the Lite0
                             features of 15,000 Tiny-ImageNet *train* photos (50 classes x 300) and
                             assigns (and is scored on) the 2,500 val photos of the same 50 classes
A dataset whose files are absent is reported as skipped, with the reason, never silently.
Methods that read images (diec, dific) run on the datasets listed in IMAGE_METHODS only, with the
experiment config named there; `--experiment METHOD=NAME` picks another:

    python bench/quality.py --methods kmeans dific --datasets mnist-test --seeds 3 --experiment dific=dific_mnist_fast

`--protocol transfer` (issue 30's check of settings chosen without labels): the image methods run
with the experiment configs whose settings were chosen on MNIST, unchanged, on a dataset they
were never tuned on (TRANSFER: scikit-learn's 8x8 digits, other writers, other scanner, other
size), beside k-means and UMAP + k-means on the same pixels:

    python bench/quality.py --protocol transfer --seeds 3

`--idx-dataset NAME=PATH` adds a dataset of yours in MNIST's format (a folder with
t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], 28x28 grayscale; K = the number of
labels): with --protocol transfer the image methods run on it with their MNIST settings, e.g. the
unseen Fashion-MNIST set that bench/studies/fashion_idx.py writes, or the printed letters of
bench/studies/glyphs_idx.py (synthetic, from the fonts matplotlib ships):

    python bench/quality.py --protocol transfer --datasets fashion-mnist --idx-dataset fashion-mnist=<folder>
    python bench/quality.py --protocol transfer --datasets glyphs --idx-dataset glyphs=<folder>
After the table, each method's gap to umap_kmeans and kmeans in the same run (or "LOSES to").
Rows (--json): {"bench", "dataset", "method", "seed", "acc", "nmi", "ari", "fit_seconds", ...}.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from raycluster.config import compose
from raycluster.metrics import size_entropy, supervised_metrics
from raycluster.app.pipeline import ensure_embeddings, open_rows
from raycluster.methods.base import ClusteringMethod
from raycluster.ray_utils import ensure_ray
from common import SHARED, append_json_rows

METHODS = ["kmeans", "umap_kmeans", "temi", "cludi", "cludi_paper", "diec", "dific"]
# Recipes too slow for a CPU: skipped (and said so) unless a GPU is present.
GPU_ONLY = {"cludi_paper": "paper recipe (8 x 25 teacher chain, 200 epochs, 64 x 50 inference): hours on CPU"}
# Methods that read images, not embeddings: the datasets they apply to and the experiment config
# they run with (the same one `python jobs/train.py experiment=...` runs); `--experiment` picks
# another, e.g. dific=dific_mnist_fast (fewer epochs, for slower machines).
IMAGE_METHODS = {"diec": {"mnist-test": "experiment=diec_mnist"}, "dific": {"mnist-test": "experiment=dific_mnist"}}
IMAGE_SHAPES = {"mnist-test": [1, 28, 28], "digits": [1, 8, 8]}   # (C, H, W) of a dataset's pixel rows
IDX_SHAPE = [1, 28, 28]   # every --idx-dataset (MNIST's format)
# --protocol transfer: where the image methods' settings were chosen, and where they are evaluated
TRANSFER = {"tuned_on": "mnist-test", "datasets": ["digits"], "methods": ["kmeans", "umap_kmeans", "diec", "dific"]}


class Skip(Exception):
    """A dataset that cannot run here (files absent); the reason is printed."""


def pipeline_features(overrides: list[str], cache_dir: str):
    """Shards -> embeddings through raycluster's own pipeline (cached) -> (vectors, labels, k, note)."""
    cfg = compose([f"cache_dir={cache_dir}", *overrides])
    if cfg.data.source and cfg.data.source.path and not os.path.exists(cfg.data.source.path):
        raise Skip(f"{cfg.data.source.path} not found")
    _, summary = ensure_embeddings(cfg)
    embeddings = open_rows(cfg).load()
    return embeddings.vectors, embeddings.labels, cfg.data.num_clusters, summary.weights


def same_classes_view(source: Path, classes: list[str], view: Path) -> Path:
    """A folder of links to `classes`' folders of `source`: the val photos of the train split's classes."""
    view.mkdir(parents=True, exist_ok=True)
    for name in classes:
        link = view / name
        if not link.exists():
            link.symlink_to(source / name, target_is_directory=True)
    return view


def load_dataset(name: str, args):
    """(fit vectors, fit labels, eval vectors, eval labels, k, note): methods are fitted on the
    first pair and scored on the second (the same rows, except for train/val datasets)."""
    if name == "tinyimagenet50":
        train = SHARED / "tinyimagenet-train50" / "images"
        val = SHARED / "tinyimagenet-val" / "images"
        if not (train.exists() and val.exists()):
            raise Skip(f"{train} or {val} not found")
        classes = sorted(entry.name for entry in os.scandir(train) if entry.is_dir())
        view = same_classes_view(val, classes, Path(args.cache_dir) / "tinyimagenet50-val-view")
        fit = pipeline_features(["data=folder", "data.name=tinyimagenet50-train", f"data.source.path={train}",
                                 "data.num_clusters=50", "backbone=effnet_lite0"], args.cache_dir)
        scored = pipeline_features(["data=folder", "data.name=tinyimagenet50-val", f"data.source.path={view}",
                                    "data.num_clusters=50", "backbone=effnet_lite0"], args.cache_dir)
        return fit[0], fit[1], scored[0], scored[1], 50, f"{fit[3]}; fit on train, scored on val"
    vectors, labels, k, note = single_dataset(name, args)
    return vectors, labels, vectors, labels, k, note


def idx_dataset_item(text: str) -> tuple[str, str]:
    """--idx-dataset's "NAME=PATH" -> (NAME, PATH); a NAME of DATASETS or no "=" is a usage error."""
    name, found, path = text.partition("=")
    if not (found and name and path) or name in DATASETS:
        raise argparse.ArgumentTypeError(f"takes NAME=PATH with a NAME not in {DATASETS}; got {text!r}")
    return name, path


def add_idx_dataset_option(parser: argparse.ArgumentParser) -> None:
    """--idx-dataset NAME=PATH ... (a list of (NAME, PATH); `single_dataset` reads them as a dict)."""
    parser.add_argument("--idx-dataset", nargs="*", default=[], type=idx_dataset_item, metavar="NAME=PATH",
                        help="a 28x28 dataset of yours in MNIST's IDX format (K = its number of labels)")


def single_dataset(name: str, args):
    idx_datasets = dict(getattr(args, "idx_dataset", None) or {})   # studies without the option have none
    if name in idx_datasets:
        from raycluster.data.builtin import mnist_arrays

        path = idx_datasets[name]
        try:
            k = len(np.unique(mnist_arrays(path)[1]))
        except FileNotFoundError as missing:
            raise Skip(str(missing)) from None
        # data=mnist keeps its shards in <cache_dir>/shards/<data.name>: one folder per IDX set
        return pipeline_features(["data=mnist", f"data.name={name}", f"data.source.path={path}",
                                  f"data.num_clusters={k}", "backbone=pixels"], args.cache_dir)
    if name == "imagenet50-dino-vits16":
        import torch

        folder = SHARED / "imagenet50-dino-vits16"
        if not folder.exists():
            raise Skip(f"{folder} not found")
        vectors = torch.load(folder / "features_val.pth").float().numpy()
        labels = torch.load(folder / "labels_val.pth").numpy()
        return vectors, labels, 50, "DINO ViT-S/16 embeddings (given)"
    if name == "digits":
        return pipeline_features(["data=digits", "backbone=pixels"], args.cache_dir)
    if name == "mnist-test":
        return pipeline_features(["data=mnist", f"data.source.path={SHARED / 'mnist-test'}", "backbone=pixels"],
                                 args.cache_dir)
    if name == "tinyimagenet-effnet-lite0":
        return pipeline_features(["data=tinyimagenet", f"data.source.path={SHARED / 'tinyimagenet-val' / 'images'}",
                                  f"data.source.classes={args.tiny_classes}", "backbone=effnet_lite0"], args.cache_dir)
    raise ValueError(f"unknown dataset {name!r}")


DATASETS = ["imagenet50-dino-vits16", "digits", "mnist-test", "tinyimagenet-effnet-lite0", "tinyimagenet50"]


def image_experiment(method: str, dataset: str, args) -> str | None:
    """The experiment override an image method runs with on `dataset` (None for embedding methods):
    `--experiment METHOD=NAME` replaces IMAGE_METHODS' default, e.g. dific=dific_mnist_fast."""
    default = IMAGE_METHODS.get(method, {}).get(dataset)
    if default is None and args.protocol == "transfer" and method in IMAGE_METHODS:
        default = IMAGE_METHODS[method][TRANSFER["tuned_on"]]
    chosen = args.experiment.get(method)
    return f"experiment={chosen}" if default and chosen else default


def run_method(method: str, dataset: str, vectors: np.ndarray, labels: np.ndarray, k: int, seed: int, args,
               eval_vectors: np.ndarray, eval_labels: np.ndarray) -> list:
    """Fit from scratch in `<output-root>/<dataset>/<method>/seed<N>` (emptied first unless
    --keep-stages, kept after: DiEC leaves its heatmaps and UNet there). Returns [(method name, metrics)]: one row, plus
    `diec_init_kmeans` (k-means on the COL/COT embeddings) and `diec_init_manifold` (the start: UMAP +
    method.manifold.clusterer on them) for DiEC, `dific_init_kmeans` (k-means on the warm-up S*) and
    `dific_init_manifold` (the start on it) for DiFiC."""
    import shutil

    output_dir = os.path.join(args.output_root, dataset, method, f"seed{seed}")
    if not args.keep_stages:
        shutil.rmtree(output_dir, ignore_errors=True)
    experiment = image_experiment(method, dataset, args)
    shape = [f"method.image_shape={IMAGE_SHAPES.get(dataset, IDX_SHAPE)}"] if experiment else []   # the data's, not MNIST's
    cfg = compose([experiment or f"method={method}", f"seed={seed}", f"data.num_clusters={k}",
                   f"output_dir={output_dir}", *shape, *args.method_overrides])
    ensure_ray(None, None)
    model = ClusteringMethod.from_config(cfg.method)
    start = time.time()
    model.fit(vectors, labels)  # labels feed logged per-epoch metrics only
    fit_seconds = time.time() - start
    cluster, _ = model.predict(eval_vectors)
    rows = [(method, {**supervised_metrics(eval_labels, cluster), "size_entropy": size_entropy(cluster, k),
                      "fit_seconds": round(fit_seconds, 3)})]
    stages = getattr(model, "stages", {})
    if "start_size_entropy" in stages:   # how even the method's label-free start was (what it should keep)
        rows[0][1]["start_size_entropy"] = round(stages["start_size_entropy"], 4)
    if stages:
        print(f"  {method} stages: {stages}", flush=True)
    for stage in ("init_kmeans", "init_manifold"):
        if stages.get(stage):
            rows.append((f"{method}_{stage}", {**stages[stage], "fit_seconds": round(fit_seconds, 3)}))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=None, choices=METHODS, help="default: every one (transfer: TRANSFER's)")
    parser.add_argument("--datasets", nargs="+", default=None, help=f"default: every one (transfer: TRANSFER's); "
                        f"one of {DATASETS} or a NAME of --idx-dataset")
    add_idx_dataset_option(parser)
    parser.add_argument("--seeds", type=int, default=3, help="run seeds 0 .. N-1")
    parser.add_argument("--seed-ids", type=int, nargs="+", default=None,
                        help="run exactly these seeds, in this order, instead of 0 .. N-1")
    parser.add_argument("--tiny-classes", type=int, default=20, help="Tiny-ImageNet classes (202 = all)")
    parser.add_argument("--cache-dir", default="outputs/cache", help="shards and embeddings, reused across runs")
    parser.add_argument("--method-overrides", nargs="*", default=[], help="extra Hydra overrides, e.g. method.n_init=1")
    parser.add_argument("--experiment", nargs="*", default=[], metavar="METHOD=NAME",
                        help="run an image method with another experiment config, e.g. dific=dific_mnist_fast")
    parser.add_argument("--json", default=None, help="append one row per (dataset, method, seed) as JSON lines")
    parser.add_argument("--output-root", default="outputs/bench/quality", help="per-run folders (emptied per run unless --keep-stages)")
    parser.add_argument("--keep-stages", action="store_true",
                        help="keep the run folders: a stage whose inputs are unchanged is reused (fingerprinted), "
                             "e.g. DiEC's pretrained UNet when only its search or start changed; fit_seconds then "
                             "counts only what ran")
    parser.add_argument("--protocol", default="standard", choices=["standard", "transfer"],
                        help="transfer: the image methods' MNIST settings on data never tuned on (TRANSFER)")
    args = parser.parse_args(argv)
    args.idx_dataset = dict(args.idx_dataset)
    unknown = [name for name in args.datasets or [] if name not in DATASETS and name not in args.idx_dataset]
    if unknown:
        parser.error(f"unknown --datasets {unknown}: one of {DATASETS} or a NAME given with --idx-dataset")
    transfer = args.protocol == "transfer"
    args.methods = args.methods or (TRANSFER["methods"] if transfer else METHODS)
    args.datasets = args.datasets or (TRANSFER["datasets"] if transfer else DATASETS)
    if transfer and TRANSFER["tuned_on"] in args.datasets:
        parser.error(f"--protocol transfer evaluates on data the settings were not chosen on; not {TRANSFER['tuned_on']}")
    experiments = dict(item.split("=", 1) for item in args.experiment if "=" in item)
    unknown = [item for item in args.experiment if "=" not in item] + [m for m in experiments if m not in IMAGE_METHODS]
    if unknown:
        parser.error(f"--experiment takes METHOD=NAME for a method in {sorted(IMAGE_METHODS)}; got {unknown}")
    args.experiment = experiments

    rows, skipped = [], {}
    import torch

    methods = []
    for method in args.methods:
        if method in GPU_ONLY and not torch.cuda.is_available():
            skipped[method] = f"needs a GPU: {GPU_ONLY[method]}"
            print(f"SKIPPED {method}: {skipped[method]}", flush=True)
        else:
            methods.append(method)
    for dataset in args.datasets:
        try:
            vectors, labels, eval_vectors, eval_labels, k, note = load_dataset(dataset, args)
        except Skip as reason:
            skipped[dataset] = str(reason)
            print(f"SKIPPED {dataset}: {reason}", flush=True)
            continue
        label = dataset if dataset != "tinyimagenet-effnet-lite0" or args.tiny_classes == 20 else \
            f"{dataset}-{args.tiny_classes}cls"
        print(f"{label}: fit {vectors.shape[0]} x {vectors.shape[1]}, scored on {len(eval_labels)}, K={k}; "
              f"features: {note}", flush=True)
        for method in methods:
            if method in IMAGE_METHODS and image_experiment(method, dataset, args) is None:
                reason = (f"reads images; its experiment config is for {sorted(IMAGE_METHODS[method])} "
                          "(other 28x28 or 8x8 sets: --protocol transfer)")
                skipped[f"{method} on {label}"] = reason
                print(f"SKIPPED {method} on {label}: {reason}", flush=True)
                continue
            for seed in args.seed_ids if args.seed_ids is not None else range(args.seeds):
                for name, result in run_method(method, dataset, vectors, labels, k, seed, args, eval_vectors,
                                               eval_labels):
                    row = {"bench": "quality", "protocol": args.protocol, "dataset": label, "method": name, "seed": seed,
                           "n": int(len(eval_labels)),
                           "n_fit": int(len(labels)),
                           "k": k, "experiment": image_experiment(method, dataset, args),
                           **({"kept_stages": True} if args.keep_stages else {}),
                           **{key: round(value, 4) if key != "fit_seconds" else value for key, value in result.items()}}
                    rows.append(row)
                    append_json_rows(args.json, [row])   # as it comes: a run stopped later keeps it
                    print(f"  {name} seed {seed}: ACC {row['acc']:.4f} NMI {row['nmi']:.4f} ARI {row['ari']:.4f} "
                          f"fit {row['fit_seconds']:.2f}s", flush=True)
    print_table(rows)
    for line in baseline_gaps(rows):
        print(line)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print("cludi rows: the CPU recipe (configs/method/cludi.yaml); cludi_paper: the public code's recipe")
    print("diec rows: configs/experiment/diec_mnist.yaml (UNet pretrained on the same images, COL/COT searched "
          "without labels, then method.output: the start, UMAP + a Gaussian mixture (default), or its DEC fine-tune), "
          "fit = that whole pipeline; diec_init_kmeans: k-means on the COL/COT embeddings; diec_init_manifold: the "
          "start (UMAP + method.manifold.clusterer)")
    for method, name in args.experiment.items():
        print(f"{method} rows: configs/experiment/{name}.yaml (--experiment), not the default named below")
    print("dific rows: configs/experiment/dific_mnist.yaml (from scratch: warm-up distillation, then method.output: "
          "the warm-up clusters (default) or the neighbour-guided head from them), fit = that whole pipeline; "
          "dific_init_kmeans: k-means on S* after the warm-up; dific_init_manifold: the start on that S*, UMAP + "
          "method.manifold.clusterer (the warm-up clusters)")
    return rows


BASELINES = ("umap_kmeans", "kmeans")   # what every other method is measured against, same data, same run


def rows_by_run(rows: list[dict]) -> dict:
    """Rows -> {(dataset, method): its rows (one per seed)}, in the order they first came."""
    groups = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"]), []).append(row)
    return groups


def baseline_gaps(rows: list[dict]) -> list[str]:
    """One line per (dataset, method) that ran beside a baseline of BASELINES in this run: its mean
    ACC over seeds and how many points it is over (or LOSES to) each baseline's mean ACC."""
    groups = rows_by_run(rows)
    means = {key: float(np.mean([row["acc"] for row in group])) for key, group in groups.items()}
    lines = []
    for (dataset, method), acc in means.items():
        gaps = [(baseline, acc - means[(dataset, baseline)]) for baseline in BASELINES
                if baseline != method and (dataset, baseline) in means]
        if gaps:
            said = ", ".join(f"{100 * gap:+.1f} points over {baseline}" if gap >= 0 else
                             f"LOSES to {baseline} by {-100 * gap:.1f} points" for baseline, gap in gaps)
            seeds = len(groups[(dataset, method)])
            over = f"mean of {seeds} seeds" if seeds > 1 else "1 seed"
            lines.append(f"{dataset}: {method} ACC {acc:.3f} ({over}), {said}")
    return lines


def print_table(rows: list[dict]) -> None:
    width = max([10] + [len(row["method"]) + 2 for row in rows])
    print(f"\n{'dataset':<36}{'method':<{width}}{'ACC':>16}{'NMI':>16}{'ARI':>16}{'fit s':>9}")
    for (dataset, method), group in rows_by_run(rows).items():
        cells = []
        for key in ("acc", "nmi", "ari"):
            values = np.array([r[key] for r in group])
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        fit = np.mean([r["fit_seconds"] for r in group])
        print(f"{dataset:<36}{method:<{width}}{cells[0]:>16}{cells[1]:>16}{cells[2]:>16}{fit:>9.2f}")


if __name__ == "__main__":
    main()
    sys.exit(0)
