"""Diffusion-UNet activations at a chosen (layer, timestep), pooled to one embedding per image.

Layers are the UNet's blocks, named in forward order: `down_0 .. down_{n-1}`, `mid`,
`up_0 .. up_{n-1}`. An image is noised to timestep t with the scheduler's forward process
(x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps), run through the UNet with forward hooks on the
blocks, and each block's output is average-pooled over space to a `pool` x `pool` grid and
flattened: (B, C_layer * pool^2); pool = 1 is global average pooling. For small images whose
classes differ by where strokes are (digits), a grid keeps that layout, which the global mean
throws away (measured: docs/backbones.md). With
`draws` > 1 the pooled activations of several noise draws are averaged (DiEC's noise-averaged
embedding). t = 0 means the clean image (no noise), still with the t = 0 time embedding.

`UNetExtractor` is the same thing as a Ray Data actor (`backbone=unet`), for the extraction job.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Optional, Sequence

import torch

from raycluster.data.transforms import ImageSpec
from raycluster.features.base import Extractor


def layer_names(unet) -> list[str]:
    """Block names in forward order, e.g. ['down_0', 'down_1', 'down_2', 'mid', 'up_0', ...]."""
    return ([f"down_{i}" for i in range(len(unet.down_blocks))] + ["mid"]
            + [f"up_{i}" for i in range(len(unet.up_blocks))])


def layer_module(unet, name: str) -> torch.nn.Module:
    if name == "mid":
        return unet.mid_block
    kind, _, index = name.partition("_")
    blocks = {"down": unet.down_blocks, "up": unet.up_blocks}.get(kind)
    if blocks is None or not index.isdigit() or int(index) >= len(blocks):
        raise ValueError(f"unknown UNet layer {name!r}; this UNet has {layer_names(unet)}")
    return blocks[int(index)]


@contextmanager
def hooked_activations(unet, names: Sequence[str], pool: int = 1):
    """Yields a dict that each forward fills with {name: (B, C * pool^2) pooled block output}.
    Down blocks return (hidden, skips): the hidden state is what the next block reads."""
    pooled, handles = {}, []

    def hook(name):
        def store(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            pooled[name] = torch.nn.functional.adaptive_avg_pool2d(hidden, pool).flatten(1)
        return store

    for name in names:
        handles.append(layer_module(unet, name).register_forward_hook(hook(name)))
    try:
        yield pooled
    finally:
        for handle in handles:
            handle.remove()


def noise_to_timestep(scheduler, images: torch.Tensor, timestep: int,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B, C, S, S) clean images in [-1, 1] -> x_t by the scheduler's forward process (t=0: unchanged)."""
    if timestep == 0:
        return images
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    steps = torch.full((len(images),), timestep, dtype=torch.long, device=images.device)
    return scheduler.add_noise(images, noise, steps)


def unet_features(unet, scheduler, images: torch.Tensor, layers: Sequence[str], timestep: int, draws: int = 1,
                  generator: Optional[torch.Generator] = None, pool: int = 1,
                  batch_size: Optional[int] = None) -> dict:
    """{layer: (B, C_layer * pool^2) float32}: pooled activations at `timestep`, averaged over
    `draws` noise draws (one draw when t = 0). Runs under the caller's grad mode; with
    `batch_size`, the UNet sees at most that many images at a time."""
    if batch_size and len(images) > batch_size:
        chunks = [unet_features(unet, scheduler, images[i:i + batch_size], layers, timestep, draws, generator, pool)
                  for i in range(0, len(images), batch_size)]
        return {name: torch.cat([chunk[name] for chunk in chunks]) for name in layers}
    draws = 1 if timestep == 0 else max(1, draws)
    steps = torch.full((len(images),), timestep, dtype=torch.long, device=images.device)
    sums = {}
    with hooked_activations(unet, layers, pool) as pooled:
        for _ in range(draws):
            unet(noise_to_timestep(scheduler, images, timestep, generator), steps)
            for name in layers:
                sums[name] = pooled[name].float() if name not in sums else sums[name] + pooled[name].float()
    return {name: value / draws for name, value in sums.items()}


class _UNetEmbedding(torch.nn.Module):
    """Normalised images (B, C, H, W) in [-1, 1] -> (B, C_layer) at the configured (layer, t)."""

    def __init__(self, unet, scheduler, layer: str, timestep: int, draws: int, pool: int, sample_size: int, seed: int):
        super().__init__()
        self.unet, self.scheduler = unet, scheduler
        self.layer, self.timestep, self.draws, self.pool, self.sample_size = layer, timestep, draws, pool, sample_size
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, images):
        from raycluster.diffusion.unet import pad_to_sample_size

        images = pad_to_sample_size(images, self.sample_size)
        return unet_features(self.unet, self.scheduler, images, [self.layer], self.timestep, self.draws,
                             self.generator, self.pool)[self.layer]


class UNetExtractor(Extractor):
    """`backbone=unet`: pooled diffusion-UNet activations at (layer, timestep) as the embedding.

    unet: a diffusers folder or hub name (`from_pretrained`), or a config dict (random init:
    the summary then says the features are not meaningful)."""

    def __init__(self, unet, layer: str = "mid", timestep: int = 100, draws: int = 4, pool: int = 1,
                 channels: int = 1, size: Optional[int] = None, seed: int = 0, **runtime):
        super().__init__(unet=unet, layer=layer, timestep=timestep, draws=draws, pool=pool, channels=channels,
                         size=size, seed=seed, **runtime)

    @classmethod
    def image_spec(cls, channels: int = 1, size: Optional[int] = None, **config) -> ImageSpec:
        # [0, 255] -> [-1, 1], the range the UNet was trained on
        return ImageSpec(size=size, channels=channels, interpolation="bilinear", crop_pct=1.0,
                         mean=(0.5,) * 3, std=(0.5,) * 3)

    @classmethod
    def weights_note(cls, unet=None, **config) -> str:
        if isinstance(unet, dict) or unet is None:
            return "random init UNet: features are NOT meaningful"
        return f"diffusion UNet from {unet}"

    def build(self, unet, layer, timestep, draws, pool, seed, **config):
        from raycluster.diffusion.unet import build_scheduler, load_unet

        model = load_unet(unet if isinstance(unet, str) else dict(unet))
        scheduler = build_scheduler(source=unet if isinstance(unet, str) else None)
        layer_module(model, layer)   # one clear error for an unknown layer
        return _UNetEmbedding(model, scheduler, layer, int(timestep), int(draws), int(pool), model.config.sample_size,
                              seed)
