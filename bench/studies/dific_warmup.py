"""DiFiC warm-up: how good S* gets, epoch by epoch, under different object-mask settings.

Study, 2026-11-24. Decision it produced: DiFiC's `mask_threshold` was 0.1 (a labelled measure), until
2026-12-05: now 0, the mask with no value to choose (docs/methods/dific.md, "No mask threshold").

    python bench/studies/dific_warmup.py                       # the figures behind method.model.mask_threshold
    python bench/studies/dific_warmup.py --variants "t0.3:mask_threshold=0.3" --seed 0 --epochs 30 --json rows.jsonl

Trains the from-scratch warm-up of `experiment=dific_mnist` (extractor + 16x16 conditional UNet +
text encoder, masked denoising loss) in this process, without Ray, on the 10,000 MNIST test digits,
and every `--every` epochs scores S*: the share of each image's 10 nearest neighbours (cosine,
exact) that carry its label, and k-means ACC on the unit-length S* (as DiFiC clusters it).
`--epochs` of a `--schedule`-epoch learning-rate schedule (the config's steps, 30 epochs here, by default) are run, so
early epochs match a full run's. Labels only score S*, but the config's mask_threshold of 2026-11-24 to 12-05 was
chosen from this table (a labelled measure on one seed). Each
variant is `name:key=value,...` over `method.model` (DiFiCConfig fields).
Rows (--json): {"bench", "dataset", "method", "seed", "epoch", "knn_agreement", "kmeans_acc", "mask_mean", "seconds"}.
"""
from __future__ import annotations

import sys
from pathlib import Path
import argparse
import time
from dataclasses import asdict

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import SHARED, append_json_rows  # noqa: E402

VARIANTS = ["threshold-0.3:mask_threshold=0.3", "threshold-0.1:mask_threshold=0.1", "no-mask:mask_start_epoch=-1"]


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, settings = text.partition(":")
    return name, {key: yaml.safe_load(value) for key, value in
                  (item.split("=", 1) for item in settings.split(",") if item)}


def knn_label_agreement(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """(N, D) float32, (N,) -> share of each row's k nearest neighbours (cosine, itself excluded) with its label."""
    import faiss

    unit = np.ascontiguousarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-8), dtype=np.float32)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    _, ids = index.search(unit, k + 1)
    return float((labels[ids[:, 1:]] == labels[:, None]).mean())


def run_variant(name: str, overrides: dict, pixels, labels: np.ndarray, method: dict, args) -> list[dict]:
    import torch

    from raycluster.methods.dific.model import build_dific
    from raycluster.methods.kmeans.method import FaissKMeans
    from raycluster.metrics import supervised_metrics
    from raycluster.train.loop import OptimConfig, epochs_for, make_optimizer, train_epochs

    steps = int(np.ceil(len(pixels) / method["warmup"]["batch_size"]))
    optim = epochs_for(OptimConfig(**method["warmup"]), steps)   # the config's schedule, in epochs of these rows
    if args.schedule:
        optim = OptimConfig(**{**asdict(optim), "epochs": args.schedule})
    config = {**method["model"], **overrides, "n_clusters": 10, "image_shape": (1, 28, 28), "guidance": False}
    torch.manual_seed(args.seed)   # as a Ray Train worker seeds before building the model
    model = build_dific(config)
    optimizer = make_optimizer(model, optim)
    rows, start = [], time.time()

    class Done(Exception):
        pass

    def on_epoch_end(epoch, terms, *_):
        if (epoch + 1) % args.every and epoch + 1 != args.epochs:
            return
        words = model.embed(pixels).numpy()
        words /= np.linalg.norm(words, axis=1, keepdims=True).clip(1e-8)   # as DiFiC clusters S*: cosine
        clusters, _ = FaissKMeans(10, seed=args.seed).fit(words).predict(words)
        row = {"bench": "dific_warmup", "dataset": "mnist-test", "method": name, "seed": args.seed, "epoch": epoch + 1,
               "knn_agreement": round(knn_label_agreement(words, labels), 4),
               "kmeans_acc": round(supervised_metrics(labels, clusters)["acc"], 4),
               "mask_mean": round(terms["mask_mean"], 3), "seconds": round(time.time() - start)}
        print("  ".join(f"{key} {value}" for key, value in row.items() if key not in ("bench", "dataset")), flush=True)
        rows.append(row)
        if epoch + 1 == args.epochs:
            raise Done

    try:
        train_epochs(model, pixels, optim, optimizer, steps, 0, args.seed, None, on_epoch_end)
    except Done:
        pass
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, help="name:key=value,... over method.model")
    parser.add_argument("--seed", type=int, default=2, help="seed 2: the seed whose masks shrank at threshold 0.3")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--schedule", type=int, default=None, help="epochs of the lr schedule (config's by default)")
    parser.add_argument("--every", type=int, default=5, help="score S* every this many epochs")
    parser.add_argument("--limit", type=int, default=None, help="first N digits only (a quick look)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    from raycluster.config import compose
    from raycluster.data.builtin import mnist_arrays

    torch.set_num_threads(args.threads)
    method = compose(["experiment=dific_mnist"]).method   # a plain dict
    images, labels = mnist_arrays(str(SHARED / "mnist-test"))
    images, labels = images[:args.limit], labels[:args.limit].astype(np.int64)
    pixels = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)
    rows = []
    for variant in args.variants:
        name, overrides = parse_variant(variant)
        print(f"{name}: {overrides}", flush=True)
        rows += run_variant(name, overrides, pixels, labels, method, args)
    print(f"\nDiFiC warm-up on mnist-test ({len(labels)} digits), seed {args.seed}, epoch {args.epochs} of "
          f"{args.schedule or 'the config'}:")
    print("| variant | 10-NN label agreement | k-means ACC on S* | mask mean | s |\n|---|---|---|---|---|")
    last = {row["method"]: row for row in rows}
    for name, row in last.items():
        print(f"| {name} | {row['knn_agreement']:.4f} | {row['kmeans_acc']:.4f} | {row['mask_mean']:.3f} "
              f"| {row['seconds']} |")
    reference = last[rows[0]["method"]]
    for name, row in last.items():
        if row is not reference:
            print(f"{name} vs {reference['method']}: 10-NN agreement "
                  f"{row['knn_agreement'] - reference['knn_agreement']:+.4f}")
    append_json_rows(args.json, rows)


if __name__ == "__main__":
    main()
