"""CLUDI as the public code runs it, side by side with ours: teacher ACC and size entropy per epoch.

Study, 2026-12-03. Decision it produced: none (a check of our model against the public code's, docs/methods/cludi.md).

    git clone https://github.com/BGU-CS-VIL/CLUDI /tmp/CLUDI     # 415682c; not shipped with raycluster
    pip install --target /tmp/cludi-deps einops ema-pytorch accelerate
    python bench/studies/cludi_fidelity.py --public-code /tmp/CLUDI --public-deps /tmp/cludi-deps

Both train on the 2,500 ImageNet-50 DINO ViT-S/16 val embeddings (384-d: the public denoiser's
fixed input width) with the same settings: `--epochs` (30) at lr 1e-3, batch 256, 4 teacher draws
x 5 DDIM steps, no warm start and no input PCA (the public code has neither), fp32 on the CPU.
Ours is `raycluster.methods.cludi.model` driven by `raycluster.train.loop.train_epochs` (the loop
the Ray Train workers run, one process). The public code's own `train_one_epoch` runs in a
subprocess with CPU shims (`.cuda()` a no-op, fp16 off, its hard-coded 25-step teacher chain set
to 5). Per epoch: ACC (Hungarian, against the labels) and size entropy of the teacher's clusters
of the points seen. At the end: ACC of 16 draws x 10 DDIM steps over every point. Rows go to
`--json`; `--plot` draws both curves.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import SHARED, append_json_rows  # noqa: E402

SETTINGS = {"lr": 1e-3, "batch_size": 256, "teacher_draws": 4, "teacher_steps": 5, "eval_draws": 16, "eval_steps": 10}


def load():
    import torch

    folder = SHARED / "imagenet50-dino-vits16"
    return torch.load(folder / "features_val.pth").float().numpy(), torch.load(folder / "labels_val.pth").numpy()


def epoch_row(code: str, epoch: int, labels: np.ndarray, teacher: np.ndarray, seconds: float) -> dict:
    from raycluster.metrics import size_entropy, supervised_metrics

    return {"bench": "cludi_fidelity", "code": code, "epoch": epoch + 1,
            "teacher_acc": round(supervised_metrics(labels, teacher)["acc"], 4),
            "size_entropy": round(size_entropy(teacher, 50), 4), "seconds": round(seconds, 1)}


def run_ours(epochs: int, seed: int) -> list[dict]:
    import torch

    from raycluster.config import compose
    from raycluster.methods.cludi.model import CludiConfig, CludiModel
    from raycluster.metrics import supervised_metrics
    from raycluster.train.loop import OptimConfig, make_optimizer, train_epochs

    vectors, labels = load()
    method = compose(["method=cludi"]).method
    settings = {**method["model"], "n_clusters": 50, "feature_dim": vectors.shape[1], "warm_start_epochs": 0,
                "teacher_draws": SETTINGS["teacher_draws"], "teacher_steps": SETTINGS["teacher_steps"],
                "eval_draws": SETTINGS["eval_draws"], "eval_steps": SETTINGS["eval_steps"]}
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = CludiModel(CludiConfig(**settings))
    optim = OptimConfig(**{**method["optim"], "epochs": epochs, "lr": SETTINGS["lr"],
                           "batch_size": SETTINGS["batch_size"]})
    features = torch.nn.functional.normalize(torch.from_numpy(vectors), dim=-1)   # the public code normalises too
    rows, start = [], time.time()

    def on_epoch_end(epoch, terms, teacher, seen):
        rows.append(epoch_row("raycluster", epoch, labels[seen], teacher, time.time() - start))
        print(json.dumps(rows[-1]), flush=True)

    train_epochs(model, features, optim, make_optimizer(model, optim), int(np.ceil(len(vectors) / optim.batch_size)),
                 0, seed, None, on_epoch_end)
    model.eval()
    with torch.no_grad():
        cluster, _ = model.predict(features)
    rows.append({"bench": "cludi_fidelity", "code": "raycluster", "epoch": epochs, "final": True,
                 **{k: round(v, 4) for k, v in supervised_metrics(labels, cluster.numpy()).items()},
                 "seconds": round(time.time() - start, 1)})
    return rows


def run_public(code_dir: str, deps_dir: str | None, epochs: int, seed: int) -> list[dict]:
    """The public code's training epoch, in this process (run it in a subprocess: the shims
    below change torch for the whole process)."""
    import torch

    sys.path.insert(0, code_dir)
    if deps_dir:
        sys.path.append(deps_dir)   # after our site-packages: its torch must not shadow ours
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    torch.Tensor.half = lambda self, *args, **kwargs: self.float()   # fp16 is for its GPU path
    board = types.ModuleType("torch.utils.tensorboard")   # its log_utils imports a writer it never uses here
    board.SummaryWriter = object
    sys.modules["torch.utils.tensorboard"] = board
    import cludi as public
    from torch.utils.data import DataLoader, TensorDataset

    from raycluster.metrics import supervised_metrics

    class FullPrecision:   # its loop calls the scaler's methods unconditionally when clipping
        def scale(self, loss):
            return loss

        def unscale_(self, optimizer):
            pass

        def step(self, optimizer):
            optimizer.step()

        def update(self):
            pass

    teacher_calls = []
    nmi = public.normalized_mutual_info_score

    def recording_nmi(truth, predicted):   # called for the teacher, then the student, each step
        teacher_calls.append((np.asarray(truth), np.asarray(predicted)))
        return nmi(truth, predicted)

    public.normalized_mutual_info_score = recording_nmi
    chain = public.gen_loop
    public.gen_loop = lambda model, diff, x, args, steps, *rest, **kw: chain(model, diff, x, args,
                                                                            SETTINGS["teacher_steps"], *rest, **kw)
    args = public.get_args_parser().parse_args([])
    args.epochs, args.lr, args.batch_size = epochs, SETTINGS["lr"], SETTINGS["batch_size"]
    args.batch_diffusion, args.use_fp16, args.num_clusters, args.output_dir = SETTINGS["teacher_draws"], False, 50, "."
    torch.manual_seed(seed)
    np.random.seed(seed)
    vectors, labels = load()
    loader = DataLoader(TensorDataset(torch.from_numpy(vectors), torch.from_numpy(labels)),
                        batch_size=args.batch_size, shuffle=True, drop_last=False, num_workers=0)
    student, teacher = public.initialize_models(args)
    student_diff, _, teacher_gen = public.initialize_diffusion(args)
    optimizer, _, lr_schedule, wd_schedule, momentum_schedule = public.get_optimizer_and_schedulers(
        student, None, args, loader)
    rows, start = [], time.time()
    for epoch in range(epochs):
        teacher_calls.clear()
        public.train_one_epoch(student, teacher, student_diff, teacher_gen, loader, optimizer, lr_schedule,
                               wd_schedule, momentum_schedule, epoch, FullPrecision(), args)
        seen = teacher_calls[0::2]
        rows.append(epoch_row("public", epoch, np.concatenate([t for t, _ in seen]),
                              np.concatenate([p for _, p in seen]), time.time() - start))
        print(json.dumps(rows[-1]), flush=True)
    student.eval()
    predicted = []
    with torch.no_grad():
        for batch in torch.from_numpy(vectors).split(args.batch_size):
            draws = batch.unsqueeze(0).repeat(SETTINGS["eval_draws"], 1, 1)
            _, logits, _ = chain(student, student_diff, draws, args, SETTINGS["eval_steps"],
                                 args.decoding_rescaling_factor)
            predicted.append(logits[0].mean(0).argmax(-1).numpy())
    rows.append({"bench": "cludi_fidelity", "code": "public", "epoch": epochs, "final": True,
                 **{k: round(v, 4) for k, v in supervised_metrics(labels, np.concatenate(predicted)).items()},
                 "seconds": round(time.time() - start, 1)})
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for code, style in (("raycluster", "-"), ("public", "--")):
        curve = [row for row in rows if row["code"] == code and not row.get("final")]
        final = [row for row in rows if row["code"] == code and row.get("final")]
        label = f"{code} (final ACC {final[0]['acc']:.3f})" if final else code
        for axis, key in zip(axes, ("teacher_acc", "size_entropy")):
            axis.plot([row["epoch"] for row in curve], [row[key] for row in curve], style, label=label)
    for axis, title in zip(axes, ("teacher ACC (points seen each epoch)", "teacher size entropy")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    figure.suptitle("CLUDI on ImageNet-50 DINO ViT-S/16 (2,500 x 384), same settings, 2-core CPU", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--public-code", required=True, help="a clone of BGU-CS-VIL/CLUDI")
    parser.add_argument("--public-deps", default=None, help="where its extra packages were installed (--target)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["ours", "public"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plot", default="docs/cludi-fidelity.png")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.only == "public":
        rows = run_public(os.path.abspath(args.public_code), args.public_deps, args.epochs, args.seed)
        print("ROWS " + json.dumps(rows))
        return
    if not os.path.exists(os.path.join(args.public_code, "cludi.py")):
        print(f"cludi_fidelity: no cludi.py under {args.public_code}; clone BGU-CS-VIL/CLUDI there", file=sys.stderr)
        sys.exit(2)
    rows = run_ours(args.epochs, args.seed)
    command = [sys.executable, __file__, "--only", "public", "--public-code", args.public_code,
               "--epochs", str(args.epochs), "--seed", str(args.seed)]
    if args.public_deps:
        command += ["--public-deps", args.public_deps]
    output = subprocess.run(command, check=True, capture_output=True, text=True,
                            cwd=os.path.abspath(args.public_code)).stdout
    rows += json.loads(output.splitlines()[-1][len("ROWS "):])
    print("\n| code | epochs | final ACC | NMI | ARI | teacher ACC / size entropy at the last epoch | seconds |")
    print("|---|---|---|---|---|---|---|")
    for code in ("raycluster", "public"):
        last = [row for row in rows if row["code"] == code and not row.get("final")][-1]
        final = [row for row in rows if row["code"] == code and row.get("final")][0]
        print(f"| {code} | {args.epochs} | {final['acc']} | {final['nmi']} | {final['ari']} | "
              f"{last['teacher_acc']} / {last['size_entropy']} | {final['seconds']} |")
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    append_json_rows(args.json, rows)


if __name__ == "__main__":
    main()
