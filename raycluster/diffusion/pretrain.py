"""Pretrain a diffusion UNet on the user's own images with Ray Train (for data that has no
pretrained diffusion model): DDPM denoising loss, data-parallel workers, a checkpoint every
epoch (rerun resumes), EMA weights; the EMA UNet + scheduler are saved in diffusers format."""
from __future__ import annotations

import logging
import time
from typing import Optional, Sequence

import numpy as np

from raycluster.config import TrainConfig
from raycluster.train.loop import OptimConfig

log = logging.getLogger(__name__)


def pretraining_setup(image_shape: Sequence[int], unet: Optional[dict] = None, optim: Optional[dict] = None,
                      ema_decay: float = 0.999) -> tuple[dict, OptimConfig]:
    """The denoiser's model config (SMALL_UNET + overrides) and its optimiser schedule (defaults +
    overrides): what `pretrain_unet` trains, for callers that run the loop themselves."""
    from raycluster.diffusion.unet import SMALL_UNET

    channels = image_shape[0]
    config = {"unet": {**SMALL_UNET, "in_channels": channels, "out_channels": channels, **dict(unet or {})},
              "image_shape": list(image_shape), "ema_decay": ema_decay}
    optim = OptimConfig(**{"lr": 1e-3, "min_lr": 1e-5, "weight_decay": 0.0, "betas": (0.9, 0.999), "grad_clip": 1.0,
                           "batch_size": 128, "epochs": 10, **dict(optim or {})})
    return config, optim


def pretrain_unet(pixels: np.ndarray, image_shape: Sequence[int], output_dir: str, unet: Optional[dict] = None,
                  optim: Optional[dict] = None, train: Optional[TrainConfig] = None, use_gpu: bool = False,
                  storage_path: str = "outputs/pretrain", run_name: str = "pretrain_diffusion", seed: int = 0,
                  ema_decay: float = 0.999, reuse: str = "auto") -> dict:
    """pixels: (N, C*H*W) float32 in [0, 1]. Trains, saves `output_dir/{unet,scheduler}` and
    returns {"seconds", "final_loss", "epochs", "steps", "stopped_at_step", "held_out_loss"}.
    unet: UNet2DModel config (default SMALL_UNET). optim["stop"] (`train.loop.PlateauStop`): a
    random `held_out_rows` of the rows (at most a tenth) are not trained on, and training stops
    when the denoising loss on them has plateaued; the steps are then a cap."""
    from raycluster.diffusion.objective import build_denoiser
    from raycluster.diffusion.unet import save_unet
    from raycluster.train.run import fit_with_ray_train, stop_outcome

    channels, height, width = image_shape
    if pixels.ndim != 2 or pixels.shape[1] != channels * height * width:
        raise ValueError(f"pretrain: rows of width {pixels.shape[1:]} do not match image_shape {list(image_shape)}")
    config, optim = pretraining_setup(image_shape, unet, optim, ema_decay)
    start, held_out = time.time(), None
    if optim.stop:
        pixels, held_out = optim.stop.hold_out(pixels, seed)
    state = fit_with_ray_train(build_denoiser, config, pixels, optim, train or TrainConfig(), use_gpu, storage_path,
                               run_name, seed, reuse=reuse, held_out=held_out)
    model = build_denoiser(state["model_config"])
    model.load_state_dict(state["model"])
    save_unet(model.ema.module, model.scheduler, output_dir)
    summary = {"seconds": time.time() - start, "final_loss": state["metrics"].get("train/loss"),
               "epochs": state["epoch"] + 1, **stop_outcome(state), "output": output_dir}
    log.warning("pretrained UNet saved to %s (%d epochs, %d steps%s, loss %.4f, %.0f s)", output_dir, summary["epochs"],
                summary["steps"], ", stopped on the held-out plateau" if summary["stopped_at_step"] else "",
                summary["final_loss"] or float("nan"), summary["seconds"])
    return summary
