"""Where does a pretrained denoiser stop learning? The denoising loss on held-out rows over a long schedule.

Study, 2026-12-04. Decision it produced: DiEC's pretraining stops on this held-out plateau (`train.loop.PlateauStop`, `pretrain.optim.stop`; 1%, three evaluations' window) with 3,160 steps as a cap, instead of a fixed 1,580 chosen on MNIST by ACC (docs/methods/diec.md, "Pretraining length").

    python bench/studies/pretrain_plateau.py      # digits and MNIST test, DiEC's UNet, 3,160 steps (its cap)
DiEC's pretraining as `experiment=diec_mnist` configures it (its UNet at 16 px, batch 128, lr 1e-3 cosine,
EMA 0.99; `diffusion.pretrain.pretraining_setup`), run in one process (no Ray) for `--steps` optimizer steps
on all rows but a held-out tenth (at most 1,000 rows). Every `--every` steps: the training loss (mean of the
last epoch) and the EMA UNet's denoising loss on the held-out rows (`diffusion.objective.denoising_loss`, 4
fixed noise draws per row). No labels anywhere. The plateau step is the first evaluation after which the
held-out loss never falls by more than `--tolerance` (relative) within the next tenth of the schedule.
Rows (--json): {"bench", "dataset", "seed", "step", "train_loss", "held_out_loss"} per evaluation, and
{"bench", "dataset", "seed", "steps", "plateau_step", "stop_step", "held_out_at_1580", "held_out_final"} per run
(stop_step: where DiEC's configured held-out stop ends the same curve).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py, bench/quality.py
from common import append_json_rows  # noqa: E402

SHAPES = {"mnist-test": (1, 28, 28), "digits": (1, 8, 8)}
FORMER_STEPS = 1580   # DiEC's fixed pretraining length before the held-out stop


def diec_pretraining() -> dict:
    """`experiment=diec_mnist`'s pretraining settings (method.pretrain: unet, optim, ema_decay)."""
    from raycluster.config import compose

    return compose(["experiment=diec_mnist"]).method["pretrain"]


def plateau_step(steps: list, losses: list, tolerance: float, window: int) -> int:
    """The first of `steps` from which on the loss never falls by more than `tolerance` (relative) within
    `window` steps: steps (n,) ascending, losses (n,) at those steps."""
    def still_learning(j: int) -> bool:
        return any(losses[j] - later > tolerance * losses[j]
                   for step, later in zip(steps[j + 1:], losses[j + 1:]) if step - steps[j] <= window)

    learning = [j for j in range(len(steps)) if still_learning(j)]
    return steps[learning[-1] + 1] if learning else steps[0]


def configured_stop_step(steps: list, losses: list) -> Optional[int]:
    """Where DiEC's configured held-out stop (`pretrain.optim.stop`) would end this curve; None: never."""
    from raycluster.train.loop import PlateauStop

    stop, history = PlateauStop(**diec_pretraining()["optim"]["stop"]), list(zip(steps, losses))
    return next((steps[j - 1] for j in range(1, len(history) + 1) if stop.reached(history[:j])), None)


def held_out_curve(pixels: np.ndarray, shape: tuple, steps: int, every: int, seed: int) -> list[dict]:
    """Pretrain DiEC's UNet on all rows but a held-out tenth -> one dict per evaluation."""
    import torch

    from raycluster.diffusion.objective import build_denoiser
    from raycluster.diffusion.pretrain import pretraining_setup
    from raycluster.train.loop import epochs_for, make_optimizer, train_epochs

    torch.set_num_threads(2)
    pretrain = diec_pretraining()
    order = np.random.default_rng(seed).permutation(len(pixels))
    n_held = min(len(pixels) // 10, 1000)
    held, train = torch.as_tensor(pixels[order[:n_held]]), torch.as_tensor(pixels[order[n_held:]])
    config, optim = pretraining_setup(shape, dict(pretrain["unet"]), {**dict(pretrain["optim"]), "steps": steps, "stop": None},
                                      pretrain["ema_decay"])
    torch.manual_seed(seed)
    model = build_denoiser(config)
    steps_per_epoch = max(1, -(-len(train) // optim.batch_size))
    optim = epochs_for(optim, steps_per_epoch)
    rows, start = [], time.time()

    def on_epoch_end(epoch, terms, *_):
        step = (epoch + 1) * steps_per_epoch
        if step // every != epoch * steps_per_epoch // every or epoch + 1 == optim.epochs:
            rows.append({"step": step, "train_loss": round(terms["loss"], 5), "held_out_loss": round(model.held_out_loss(held), 5)})
            print(f"  step {step:>5}  train {terms['loss']:.4f}  held-out {rows[-1]['held_out_loss']:.4f}  "
                  f"({time.time() - start:.0f} s)", flush=True)

    train_epochs(model, train, optim, make_optimizer(model, optim), steps_per_epoch, seed=seed,
                 on_epoch_end=on_epoch_end)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist-test"], choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=diec_pretraining()["optim"]["steps"])
    parser.add_argument("--every", type=int, default=120, help="steps between evaluations")
    parser.add_argument("--tolerance", type=float, default=0.01, help="relative fall that still counts as learning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="outputs/cache", help="bench/quality.py's shards and embeddings")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from quality import single_dataset

    summary = []
    for dataset in args.datasets:
        pixels, _, _, _ = single_dataset(dataset, args)   # labels are not used
        print(f"{dataset}: {len(pixels)} rows, {args.steps} steps", flush=True)
        curve = held_out_curve(np.asarray(pixels, np.float32), SHAPES[dataset], args.steps, args.every, args.seed)
        steps, losses = [r["step"] for r in curve], [r["held_out_loss"] for r in curve]
        at_former = min(curve, key=lambda r: abs(r["step"] - FORMER_STEPS))["held_out_loss"]
        row = {"bench": "pretrain_plateau", "dataset": dataset, "seed": args.seed, "steps": args.steps,
               "plateau_step": plateau_step(steps, losses, args.tolerance, args.steps // 10),
               "stop_step": configured_stop_step(steps, losses), "held_out_at_1580": at_former, "held_out_final": losses[-1]}
        summary.append(row)
        append_json_rows(args.json, [{"bench": "pretrain_plateau", "dataset": dataset, "seed": args.seed, **r}
                                     for r in curve] + [row])
    print(f"\n{'dataset':<12}{'steps':>7}{'plateau step':>14}{'stop step':>11}{'held-out at 1,580':>19}{'final':>8}")
    for row in summary:
        print(f"{row['dataset']:<12}{row['steps']:>7}{row['plateau_step']:>14}{str(row['stop_step']):>11}"
              f"{row['held_out_at_1580']:>19.4f}"
              f"{row['held_out_final']:>8.4f}")
    return summary


if __name__ == "__main__":
    main()
    sys.exit(0)
