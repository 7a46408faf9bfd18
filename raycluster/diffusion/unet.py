"""Build, load and save diffusers `UNet2DModel` + `DDPMScheduler`; map stored pixels to model input.

One way to get a UNet: `load_unet(source)` where `source` is
- a dict: the model's config (`UNet2DModel(**config)`), random init (tests, pretraining), or
- a string: a diffusers folder written by `save_pretrained` (ours: `jobs/pretrain_diffusion.py`)
  or a hub name (`google/ddpm-cifar10-32`), loaded with `from_pretrained` (optionally `subfolder`).
No weights are downloaded in tests or on machines without network: a hub name then fails
with the library's own error, which names the repository.

Images reach the UNet as (B, C, S, S) float in [-1, 1]: the stored pixel embeddings (B, C*H*W)
in [0, 1] are reshaped, scaled, downscaled when larger than the UNet's `sample_size`, enlarged
by a whole factor when at most half of it, and padded with the background value (-1) to it
(28 -> 32 for MNIST, so three 2x down-samplings divide it; 28 -> 16 for a UNet pretrained at
16 px; 8 -> 16 -> 16 for the 8x8 digits there).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

# A small UNet for 28-32 px grayscale images; the defaults of `configs/diffusion/*.yaml`.
SMALL_UNET = dict(sample_size=32, in_channels=1, out_channels=1, layers_per_block=1,
                  block_out_channels=(32, 64, 64), norm_num_groups=8,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def load_unet(source: Union[dict, str], subfolder: Optional[str] = None):
    """A `UNet2DModel` from a config dict (random init) or a folder / hub name (pretrained).
    A local folder written by `save_unet` holds the UNet in `unet/`; that is found by itself."""
    import os

    from diffusers import UNet2DModel

    if not isinstance(source, str):
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(source).items()}
        return UNet2DModel(**config)
    if subfolder is None and os.path.isdir(os.path.join(source, "unet")):
        subfolder = "unet"
    # low_cpu_mem_usage=False: the default needs `accelerate`, which a small UNet does not
    return UNet2DModel.from_pretrained(source, subfolder=subfolder, low_cpu_mem_usage=False)


def build_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear", source: Optional[str] = None):
    """The DDPM noise schedule: a pretrained source's own (`scheduler/` or its root) when it
    has one, else built from the arguments."""
    from diffusers import DDPMScheduler

    for subfolder in ("scheduler", None) if isinstance(source, str) else ():
        try:
            return DDPMScheduler.from_pretrained(source, subfolder=subfolder)
        except (OSError, ValueError, EnvironmentError):
            continue   # a bare UNet folder has no scheduler config: use the configured one
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule)


def save_unet(unet, scheduler, directory: str) -> None:
    """`directory/unet` + `directory/scheduler` in diffusers format, written under a temp name
    and renamed into place so a reader never sees a half-written model."""
    import os
    import shutil
    import tempfile

    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unet-", dir=parent)
    unet.save_pretrained(os.path.join(staging, "unet"))
    scheduler.save_pretrained(os.path.join(staging, "scheduler"))
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.replace(staging, directory)


def to_model_input(pixels: torch.Tensor, image_shape: Sequence[int], sample_size: int) -> torch.Tensor:
    """(B, C*H*W) or (B, C, H, W) float in [0, 1] -> (B, C, S, S) float in [-1, 1], fitted to
    S = sample_size by `pad_to_sample_size` (downscaled when larger, enlarged by a whole factor
    when at most S/2, padded with -1)."""
    channels, height, width = image_shape
    return pad_to_sample_size(pixels.reshape(len(pixels), channels, height, width).float() * 2 - 1, sample_size)


def pad_to_sample_size(images: torch.Tensor, sample_size: int) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, C, S, S). Larger images are first downscaled (bilinear,
    antialiased, aspect kept) until the longer side is S (a UNet at 16 px is cheaper than one at
    32 px: docs/methods/diec.md); images at most S/2 a side are enlarged by the largest whole
    factor that fits (bilinear), so the UNet's down-sampling blocks see the object at the scale
    they were built for, not as a quarter of the canvas. Then centred and padded with -1 (the
    background)."""
    import torch.nn.functional as F

    height, width = images.shape[2:]
    if (height, width) == (sample_size, sample_size):
        return images
    if height > sample_size or width > sample_size:
        scale = sample_size / max(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
        images = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    factor = min(sample_size // height, sample_size // width)
    if factor > 1:
        height, width = height * factor, width * factor
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False)
    top, left = (sample_size - height) // 2, (sample_size - width) // 2
    return F.pad(images, (left, sample_size - width - left, top, sample_size - height - top), value=-1.0)


# Under this share of the pixel variance kept (a quarter lost), a method warns that its input
# resolution blurs what tells the images apart (what MNIST and finer strokes keep at each size:
# bench/README.md, `resolution`).
KEPT_VARIANCE_WARNING = 0.75


def kept_variance(images: torch.Tensor, size: int) -> float:
    """(N, C, H, W) float in [-1, 1] -> the share of the variance about the mean image that
    survives `pad_to_sample_size(images, size)` and a bilinear resize back to H x W (label-free:
    how much of what tells the images apart a UNet at `size` px sees). 1.0 when nothing is downscaled."""
    import torch.nn.functional as F

    height, width = images.shape[2:]
    if max(height, width) <= size:   # enlarged by a whole factor or padded: nothing lost
        return 1.0
    scale = size / max(height, width)
    inner_h, inner_w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (size - inner_h) // 2, (size - inner_w) // 2
    content = pad_to_sample_size(images, size)[..., top:top + inner_h, left:left + inner_w]
    back = F.interpolate(content, size=(height, width), mode="bilinear", align_corners=False)
    spread = ((images - images.mean(0)) ** 2).sum()
    return float(1 - ((images - back) ** 2).sum() / spread.clamp_min(1e-12))


def check_input_resolution(pixels, image_shape: Sequence[int], size: int, method: str, setting: str,
                           rows: int = 2000) -> float:
    """Pixel rows (N, C*H*W) in [0, 1] -> `kept_variance` at `size` px of their first `rows`,
    logged as a warning, naming the override `setting` that sets the size, when under KEPT_VARIANCE_WARNING."""
    import logging

    channels, height, width = image_shape
    sample = torch.as_tensor(pixels[:rows], dtype=torch.float32).reshape(-1, channels, height, width) * 2 - 1
    kept = round(kept_variance(sample, size), 4)
    if kept < KEPT_VARIANCE_WARNING:
        logging.getLogger(__name__).warning(
            "%s: at %d px the %dx%d images keep %.2f of their pixel variance (under %.2f): fine detail is blurred "
            "away; a larger input size keeps more, at a higher cost per step (%s)", method, size, height, width, kept,
            KEPT_VARIANCE_WARNING, setting)
    return kept
