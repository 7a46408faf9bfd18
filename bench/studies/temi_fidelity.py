"""TEMI as the public code runs, side by side with its figures.

Study, 2026-12-02. Decision it produced: configs/method/temi.yaml follows the public code (lr, warm-up, heads, momentum schedule).

    python bench/studies/temi_fidelity.py                          # 100 and 300 epochs, seed 0 (~20 min on 2 cores)
    python bench/studies/temi_fidelity.py --epochs 100 --seeds 0 1 --json rows.jsonl

The 2,500 ImageNet-50 DINO ViT-S/16 val embeddings, TEMI's configs/method/temi.yaml recipe
(the public code's defaults: 16 heads, beta 0.6, 50-NN, batch 1,024, lr 5e-4 x batch / 256, ...)
trained by the same loop Ray Train workers run (`raycluster.train.loop.train_epochs`, one
process, no Ray), scored with the lowest-loss head. `public_acc` is the public code's ACC on the
same file at the same epochs, as measured and written in ../shared/NOTES-cludi.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import SHARED, append_json_rows  # noqa: E402

PUBLIC_ACC = {100: 0.472, 300: 0.577}   # NOTES-cludi.md: HHU-MMBS/TEMI-official-BMVC2023 on this file


def run(epochs: int, seed: int) -> dict:
    import faiss
    import torch

    from raycluster.config import compose
    from raycluster.data.store import unit_rows
    from raycluster.methods.temi.model import TemiConfig, TemiModel
    from raycluster.metrics import supervised_metrics
    from raycluster.train.loop import OptimConfig, make_optimizer, train_epochs

    folder = SHARED / "imagenet50-dino-vits16"
    vectors = torch.load(folder / "features_val.pth").float().numpy()
    labels = torch.load(folder / "labels_val.pth").numpy()
    unit = unit_rows(vectors)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit)
    table = index.search(unit, 51)[1][:, 1:]          # 50 neighbours, self excluded
    method = compose(["method=temi"]).method
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = TemiModel(TemiConfig(**{**method["model"], "n_clusters": 50, "feature_dim": vectors.shape[1],
                                    "epochs": epochs}))
    model.attach_context(bank=vectors, neighbors=table)
    optim = OptimConfig(**{**method["optim"], "epochs": epochs})
    start = time.time()
    train_epochs(model, torch.from_numpy(vectors), optim, make_optimizer(model, optim),
                 int(np.ceil(len(vectors) / optim.batch_size)), 0, seed, None, None, torch.arange(len(vectors)))
    cluster, _ = model.predict(torch.from_numpy(vectors))
    scores = supervised_metrics(labels, cluster.numpy())
    return {"bench": "temi_fidelity", "dataset": "imagenet50-dino-vits16", "epochs": epochs, "seed": seed,
            **{k: round(v, 4) for k, v in scores.items()}, "public_acc": PUBLIC_ACC.get(epochs),
            "seconds": round(time.time() - start, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for epochs in args.epochs:
        for seed in args.seeds:
            rows.append(run(epochs, seed))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| epochs | seed | ACC | NMI | ARI | public code ACC | seconds |\n|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['epochs']} | {row['seed']} | {row['acc']} | {row['nmi']} | {row['ari']} | {row['public_acc']} | "
              f"{row['seconds']} |")
    append_json_rows(args.json, rows)


if __name__ == "__main__":
    main()
