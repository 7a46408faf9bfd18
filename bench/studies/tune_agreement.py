"""How well CLUDI's label-free ASHA choice agrees with the best trial by ACC.

Study, 2026-11-23. Decision it produced: CLUDI's ASHA compares trials by the cosine silhouette of the input features.

    python bench/studies/tune_agreement.py                       # ImageNet-50 DINO features, configs/tune/asha.yaml
    python bench/studies/tune_agreement.py --num-samples 4 --epochs 10 --json rows.jsonl
Runs the same search as `jobs/tune.py method=cludi` (raycluster.tune.asha.asha_search) on the
real DINO ViT-S/16 embeddings of ImageNet-50 (../shared/data), labels logged only. Prints every
trial (criterion, the teacher's ACC on that epoch's batches, epochs it ran before ASHA stopped
it) and the agreement: the chosen trial's ACC and rank by ACC, the best ACC, Spearman(criterion,
ACC), every trial read at its last reported epoch as the choice is.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
import time
from dataclasses import asdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import SHARED, append_json_rows  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=None, help="default: configs/tune/asha.yaml")
    parser.add_argument("--epochs", type=int, default=None, help="per trial at most; default: configs/tune/asha.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="outputs/bench/tune_agreement")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    from raycluster.config import compose
    from raycluster.methods.base import ClusteringMethod
    from raycluster.ray_utils import ensure_ray
    from raycluster.tune.asha import asha_search

    folder = SHARED / "imagenet50-dino-vits16"
    if not folder.exists():
        print(f"SKIPPED: {folder} not found")
        return []
    features = torch.load(folder / "features_val.pth").float().numpy()
    labels = torch.load(folder / "labels_val.pth").numpy()
    cfg = compose(["method=cludi", "data.num_clusters=50", f"seed={args.seed}"])
    method = ClusteringMethod.from_config(cfg.method)
    optim = asdict(method.optim)
    optim["epochs"] = args.epochs or cfg.tune.epochs or optim["epochs"]
    ensure_ray(None, None)
    start = time.time()
    report = asha_search(features, method.model_factory, method.model_config(features.shape[1]), optim,
                         cfg.tune.space, os.path.abspath(args.output_dir), labels,
                         args.num_samples or cfg.tune.num_samples, cfg.tune.grace_period, cfg.tune.reduction_factor,
                         cfg.tune.max_concurrent, cfg.tune.cpus_per_trial, args.seed)
    seconds = time.time() - start
    names = sorted(cfg.tune.space)
    print(f"\n{'  '.join(f'{n:>16}' for n in names)}{'silhouette':>12}{'ACC':>8}{'size ent':>10}{'epochs':>8}")
    rows = []
    for trial in sorted(report["trials"], key=lambda t: -t["silhouette"]):
        print(f"{'  '.join(f'{trial[n]:>16}' for n in names)}{trial['silhouette']:>12.4f}{trial['acc']:>8.3f}"
              f"{trial['size_entropy']:>10.3f}{trial['epoch']:>8}")
        rows.append({"bench": "tune_agreement", "dataset": "imagenet50-dino-vits16", "method": "cludi_asha",
                     **{n: trial[n] for n in names}, "silhouette": round(trial["silhouette"], 4),
                     "acc": round(trial["acc"], 4), "epochs": trial["epoch"]})
    print(f"\nchosen (max silhouette): {report['best']}")
    print(f"agreement (each trial at its last reported epoch): {report['agreement']}")
    print(f"search wall time {seconds:.0f}s, {len(report['trials'])} trials")
    rows.append({"bench": "tune_agreement", "dataset": "imagenet50-dino-vits16", "method": "cludi_asha_summary",
                 "seconds": round(seconds, 1), **(report["agreement"] or {})})
    append_json_rows(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
    sys.exit(0)
