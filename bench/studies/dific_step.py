"""What one DiFiC training step costs on this machine, and what the mask-pass early exit and the

Study, 2026-12-02. Decision it produced: the mask pass stops after the last cross-attention; AdamW is fused.
fused optimiser save, measured side by side in one run (Ray-free; random weights: cost does not
depend on them).

    python bench/studies/dific_step.py                       # experiment=dific_mnist's model, batch 128
    python bench/studies/dific_step.py --experiment dific_mnist --repeats 30 --json rows.jsonl

Rows, each the median of `--repeats` timed calls after two warm-up calls, torch threads = 2
(what a Ray Train worker with 1.5 CPUs gets):
- `mask_pass`: DiFiCModel.object_masks, which stops the UNet after its last cross-attention;
  `mask_pass_full_unet`: the same recording with the whole UNet run (what it did before).
- `step`: a warm-up training step (masks on) + clip + fused AdamW, as the training loop runs it;
  `step_unfused_adamw`: the same with the per-parameter AdamW loop.
- `guidance_step`: the guidance stage's step (a second extractor pass for the neighbours, the head).
`ratio` is each row's seconds over its baseline's. Rows (--json): {"bench", "dataset", "method",
"seconds", "ratio"}.
"""
from __future__ import annotations

import sys
from pathlib import Path
import argparse
import statistics
import time

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import append_json_rows  # noqa: E402


def median_seconds(call, repeats: int) -> float:
    call()
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="dific_mnist")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="append the rows as JSON lines")
    args = parser.parse_args(argv)

    import torch

    from raycluster.config import compose
    from raycluster.methods.dific.model import build_dific
    from raycluster.methods.base import ClusteringMethod
    from raycluster.train.loop import make_optimizer

    torch.set_num_threads(args.threads)
    method = ClusteringMethod.from_config(compose([f"experiment={args.experiment}"]).method)
    pixels = torch.rand(args.batch_size, int(np.prod(method.image_shape)))
    rows = {}

    torch.manual_seed(0)
    model = build_dific({**method.base_config(), "guidance": False, "mask_start_epoch": 0})
    images = model.images(pixels)
    context = model.condition(model.proxy_words(images)).detach()
    rows["mask_pass"] = median_seconds(lambda: model.object_masks(images, context), args.repeats)

    @torch.no_grad()
    def full_unet_pass():
        steps = torch.full((len(images),), model.config.mask_timestep, dtype=torch.long)
        model.recorded.clear()
        for recorder in model.recorders.values():
            recorder.active = True
        model.unet(model.scheduler.add_noise(images, torch.randn_like(images), steps), steps,
                   encoder_hidden_states=context)
        for recorder in model.recorders.values():
            recorder.active = False

    rows["mask_pass_full_unet"] = median_seconds(full_unet_pass, args.repeats)

    def stepper(model, optimizer, row_ids=None):
        def step():
            loss, _ = model.training_step(pixels) if row_ids is None else model.training_step(pixels, row_ids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), method.warmup.grad_clip)
            optimizer.step()
        return step

    rows["step"] = median_seconds(stepper(model, make_optimizer(model, method.warmup)), args.repeats)
    unfused = torch.optim.AdamW(model.parameter_groups(method.warmup.lr, method.warmup.weight_decay),
                                lr=method.warmup.lr, betas=method.warmup.betas, fused=False)
    rows["step_unfused_adamw"] = median_seconds(stepper(model, unfused), args.repeats)

    word_dim = model.text_encoder.get_input_embeddings().embedding_dim
    centers = np.random.default_rng(0).normal(size=(method.n_clusters, word_dim)).tolist()
    guided = build_dific({**method.base_config(), "guidance": True, "centers": centers, "mask_start_epoch": 0})
    bank = torch.rand(4 * args.batch_size, pixels.shape[1])
    guided.attach_context(bank=bank, neighbors=torch.randint(0, len(bank), (len(bank), method.knn)))
    rows["guidance_step"] = median_seconds(stepper(guided, make_optimizer(guided, method.optim),
                                                   torch.arange(args.batch_size)), args.repeats)

    baselines = {"mask_pass": "mask_pass_full_unet", "step": "step_unfused_adamw"}
    out = []
    for name, seconds in rows.items():
        base = rows.get(baselines.get(name, ""), seconds)
        out.append({"bench": "dific_step", "dataset": f"random-{'x'.join(map(str, method.image_shape))}",
                    "method": name, "experiment": args.experiment, "batch_size": args.batch_size,
                    "seconds": round(seconds, 4), "ratio": round(seconds / base, 3)})
    print(f"\n{'part':<22}{'seconds':>10}{'ratio':>8}   ({args.experiment}, batch {args.batch_size}, "
          f"{args.threads} threads, median of {args.repeats})")
    for row in out:
        print(f"{row['method']:<22}{row['seconds']:>10.4f}{row['ratio']:>8.3f}")
    append_json_rows(args.json, out)
    return out


if __name__ == "__main__":
    main()
