"""CLUDI's recipes trained in one process without Ray, on a GPU when there is one.

Study, 2026-11-24. Decision it produced: `cludi_paper` (the public code's recipe) is for GPUs; the CPU `cludi` recipe is a separate config.

    python bench/studies/cludi_recipes.py                      # cludi_paper on ImageNet-50 and digits, 3 seeds
    python bench/studies/cludi_recipes.py --recipes cludi cludi_paper --datasets digits --seeds 1 --epochs 30

`bench/quality.py` runs CLUDI through the product (Ray Train workers); it skips `cludi_paper` on
a machine without a GPU. This script runs the loop those workers run (`train.loop.train_epochs`,
one worker: the same steps per epoch, seeding and schedule) in this process, on cuda when
available, so the paper recipe can be measured on a GPU machine that has torch but not the
project's Ray stack. Recipes are read from configs/method/<recipe>.yaml (the `defaults` chain
followed), so the figures are the config's, not a copy. Labels only score the result.

Datasets: imagenet50-dino-vits16 (2,500 x 384 DINO ViT-S/16 embeddings in ../shared/data or
$RAYCLUSTER_SHARED_DATA, K = 50) and digits (scikit-learn's 1,797 8x8 digits as pixels in [0, 1],
as `data=digits backbone=pixels` stores them, K = 10): fitted and scored on the same points.
imagenet50-train-split is the paper's setting: fit on the ImageNet-50 *train* embeddings
(`features_train.pth` / `labels_train.pth` beside the val files; the public code's train.pth,
64,947 x 384), score on the 2,500 val embeddings. shared/data does not hold the train files
today, so that dataset is reported as skipped, with the path it looked for.
Rows (--json): {"bench", "dataset", "method", "seed", "device", "acc", "nmi", "ari", "fit_seconds",
"predict_seconds", "epochs"}.
"""
from __future__ import annotations

import sys
import argparse
import math
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import SHARED, append_json_rows  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "method"


def recipe(name: str) -> dict:
    """configs/method/<name>.yaml with its `defaults` merged in: {"model": {...}, "optim": {...}}."""
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    merged: dict = {"model": {}, "optim": {}}
    for parent in [d for d in config.get("defaults", []) if d != "_self_"]:
        base = recipe(parent)
        for part in merged:
            merged[part].update(base[part])
    for part in merged:
        merged[part].update(config.get(part) or {})
    return merged


DATASETS = ["imagenet50-dino-vits16", "digits", "imagenet50-train-split"]


class Skip(Exception):
    """A dataset whose files are absent; the reason is printed and the bench goes on."""


def load_embeddings(split: str) -> tuple[np.ndarray, np.ndarray]:
    """ImageNet-50 DINO embeddings of `split` ("val" or "train") -> (features (N, 384) float32, labels (N,) int64)."""
    import torch

    folder = SHARED / "imagenet50-dino-vits16"
    paths = [folder / f"features_{split}.pth", folder / f"labels_{split}.pth"]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise Skip(f"{', '.join(missing)} not found")
    return torch.load(paths[0]).float().numpy(), torch.load(paths[1]).numpy().astype(np.int64)


def load_dataset(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """-> (fit features (N, F) float32, fit labels (N,) int64, scored features (M, F), scored labels (M,), K).
    Labels of the fit split only feed the printed teacher scores."""
    if name == "imagenet50-dino-vits16":
        features, labels = load_embeddings("val")
        return features, labels, features, labels, 50
    if name == "imagenet50-train-split":
        return (*load_embeddings("train"), *load_embeddings("val"), 50)
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        # as the shards hold them: 0..16 scaled to 8-bit, then read back as [0, 1]
        pixels = (np.round(digits.data * (255.0 / 16.0)) / 255.0).astype(np.float32)
        labels = digits.target.astype(np.int64)
        return pixels, labels, pixels, labels, 10
    raise ValueError(f"unknown dataset {name!r}")


def run(recipe_name: str, dataset: str, data: tuple, seed: int, device: str, epochs: int | None, every: int) -> dict:
    """Fit `recipe_name` on `data` (what load_dataset(dataset) returns) with `seed`; -> one row."""
    import torch

    from raycluster.methods.cludi.model import build_cludi
    from raycluster.metrics import supervised_metrics
    from raycluster.train.loop import OptimConfig, make_optimizer, train_epochs

    features, labels, scored_features, scored_labels, k = data
    settings = recipe(recipe_name)
    optim = OptimConfig(**{**settings["optim"], "betas": tuple(settings["optim"]["betas"]),
                           **({"epochs": epochs} if epochs else {})})
    torch.manual_seed(seed)        # as a Ray Train worker seeds before building the model
    np.random.seed(seed * 1000)    # rank 0's numpy seed (feature-dropout rates)
    model = build_cludi({**settings["model"], "n_clusters": k, "feature_dim": features.shape[1]}).to(device)
    optimizer = make_optimizer(model, optim)
    on_device = torch.from_numpy(features).to(device)
    steps = max(1, math.ceil(len(features) / optim.batch_size))

    def report(epoch, terms, clusters, seen):
        if (epoch + 1) % every == 0 or epoch + 1 == optim.epochs:
            teacher = supervised_metrics(labels[seen], clusters)
            print(f"    {recipe_name} {dataset} seed {seed} epoch {epoch + 1}/{optim.epochs}: loss "
                  f"{terms['loss']:.4f} teacher ACC {teacher['acc']:.3f} NMI {teacher['nmi']:.3f} "
                  f"{terms['epoch_seconds']:.2f}s/epoch", flush=True)

    start = time.time()
    train_epochs(model, on_device, optim, optimizer, steps, seed=seed, on_epoch_end=report)
    if device == "cuda":
        torch.cuda.synchronize()
    fit_seconds = time.time() - start
    model.eval()
    torch.manual_seed(seed)        # as CLUDI.predict: the draws are random
    start = time.time()
    cluster, _ = model.predict(torch.from_numpy(scored_features).to(device))
    predict_seconds = time.time() - start
    scores = supervised_metrics(scored_labels, cluster.cpu().numpy())
    return {"bench": "cludi_recipes", "dataset": dataset, "method": recipe_name, "seed": seed, "device": device,
            "fit_points": len(features), "scored_points": len(scored_features),
            **{key: round(value, 4) for key, value in scores.items()}, "fit_seconds": round(fit_seconds, 1),
            "predict_seconds": round(predict_seconds, 1), "epochs": optim.epochs}


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["cludi_paper"], choices=["cludi", "cludi_paper"])
    parser.add_argument("--datasets", nargs="+", default=["imagenet50-dino-vits16", "digits"], choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--seed-ids", type=int, nargs="+", default=None, help="exactly these seeds")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (schedule too)")
    parser.add_argument("--every", type=int, default=20, help="print the teacher's batch scores every N epochs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="append the rows as JSON lines")
    args = parser.parse_args(argv)
    if args.device == "cpu" and "cludi_paper" in args.recipes and not args.epochs:
        print("note: cludi_paper on CPU takes hours (NOTES-cludi: 11-17 s a step on 2 cores)", flush=True)

    rows, skipped = [], {}
    for dataset in args.datasets:
        try:
            data = load_dataset(dataset)
        except Skip as reason:
            skipped[dataset] = str(reason)
            print(f"SKIPPED {dataset}: {reason}", flush=True)
            continue
        for name in args.recipes:
            for seed in args.seed_ids if args.seed_ids is not None else range(args.seeds):
                row = run(name, dataset, data, seed, args.device, args.epochs, args.every)
                rows.append(row)
                print(f"  {name} {dataset} seed {seed}: ACC {row['acc']:.4f} NMI {row['nmi']:.4f} "
                      f"ARI {row['ari']:.4f} fit {row['fit_seconds']}s predict {row['predict_seconds']}s", flush=True)
                append_json_rows(args.json, [row])
    print(f"\n{'dataset':<26}{'recipe':<14}{'device':<8}{'ACC':>16}{'NMI':>16}{'ARI':>16}{'fit s':>9}")
    for dataset in [d for d in args.datasets if d not in skipped]:
        for name in args.recipes:
            group = [row for row in rows if row["dataset"] == dataset and row["method"] == name]
            cells = "".join(f"{np.mean([r[m] for r in group]):>9.3f} ± {np.std([r[m] for r in group]):.3f}"
                            for m in ("acc", "nmi", "ari"))
            print(f"{dataset:<26}{name:<14}{args.device:<8}{cells}{np.mean([r['fit_seconds'] for r in group]):>9.0f}")
    for dataset, reason in skipped.items():
        print(f"skipped {dataset}: {reason}")
    return rows


if __name__ == "__main__":
    main()
