"""Pure decode / resize / normalise functions on Ray Data batches (dict[str, np.ndarray]).

Split on purpose: `decode_batch` (on the extractor actor's CPU threads) turns encoded bytes into
fixed-size uint8 arrays; `normalize` runs in the extractor, on the GPU when there is one, so 1 byte
per pixel crosses to the device. Together they equal timm's eval transform: resize the short
side to floor(size / crop_pct), centre-crop to size, scale to [0, 1], subtract mean, divide
by std.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class ImageSpec:
    """What an extractor wants its images to be.

    size: output side in pixels (square centre crop), or None to keep the native size (then all
    images of a dataset must share one size). crop_pct: resize the short side to size / crop_pct
    before cropping (timm convention). mean/std: per-channel normalisation in [0, 1] units.
    thumbnail: first shrink the short side to this many pixels (then resize to `size` as usual):
    a near-duplicate descriptor's bottleneck, under which resolution, recompression and small
    crops stop mattering.
    """

    size: Optional[int] = 224
    channels: int = 3                      # 1: grayscale, 3: RGB
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    mean: Sequence[float] = (0.0, 0.0, 0.0)
    std: Sequence[float] = (1.0, 1.0, 1.0)
    thumbnail: Optional[int] = None

    @classmethod
    def from_timm(cls, data_config: dict) -> "ImageSpec":
        """Build from `timm.data.resolve_data_config(...)` output."""
        channels, height, width = data_config["input_size"]
        if height != width:
            raise ValueError(f"non-square timm input size {data_config['input_size']} is not supported")
        return cls(size=int(height), channels=int(channels), interpolation=data_config.get("interpolation", "bicubic"),
                   crop_pct=float(data_config.get("crop_pct", 1.0)), mean=tuple(data_config["mean"]),
                   std=tuple(data_config["std"]))


def decode_image(data: bytes, spec: ImageSpec) -> np.ndarray:
    """Decode encoded image bytes to a (C, H, W) uint8 array shaped by `spec`.

    Raises whatever PIL raises on corrupt or truncated data (the caller counts those).
    """
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("L" if spec.channels == 1 else "RGB")
    if spec.thumbnail:
        width, height = image.size
        scale = spec.thumbnail / min(width, height)
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    if spec.size is not None:
        interpolation = _INTERPOLATION[spec.interpolation]
        scale_size = math.floor(spec.size / spec.crop_pct)
        width, height = image.size
        if width <= height:
            new_size = (scale_size, max(1, round(height * scale_size / width)))
        else:
            new_size = (max(1, round(width * scale_size / height)), scale_size)
        if new_size != image.size:
            image = image.resize(new_size, interpolation)
        left = (image.size[0] - spec.size) // 2
        top = (image.size[1] - spec.size) // 2
        image = image.crop((left, top, left + spec.size, top + spec.size))
    pixels = np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


class ImageSizeError(ValueError):
    """Images of different sizes with a backbone that does not resize (image spec size null)."""


def decode_batch(batch: dict, spec: ImageSpec) -> dict:
    """Ray Data batch of raw WebDataset rows -> decoded batch.

    In: `__key__` (B,) str, `__url__` (B,) str, `image` (B,) bytes, optional `cls` (B,) bytes.
    Out: `key` (B,) str, `shard` (B,) str, `label` (B,) int64 (-1 when unknown),
    `ok` (B,) bool, `pixels` (B, C, H, W) uint8 (zeros where decoding failed).
    A corrupt sample stays in the batch with ok=False so the shard's count stays exact and the
    job summary can report it; the extractor skips it.
    """
    keys = batch["__key__"]
    decoded, ok = [], np.zeros(len(keys), dtype=bool)
    for index, data in enumerate(batch["image"]):
        try:
            decoded.append(decode_image(data, spec))
            ok[index] = True
        except Exception:  # PIL raises several types for bad data; all mean "corrupt sample"
            decoded.append(None)
    shape = next((array.shape for array in decoded if array is not None), (spec.channels, spec.size or 1, spec.size or 1))
    pixels = np.zeros((len(keys), *shape), dtype=np.uint8)
    for index, array in enumerate(decoded):
        if array is not None:
            if array.shape != shape:
                raise ImageSizeError(f"images of different sizes ({str(keys[index])!r} decodes to {tuple(array.shape)}, "
                                     f"others to {tuple(shape)}) and no resize: set backbone.extractor.size "
                                     "(e.g. backbone.extractor.size=32)")
            pixels[index] = array
    return {"key": np.asarray(keys, dtype=object), "shard": np.asarray(batch["__url__"], dtype=object),
            "label": parse_labels(batch.get("cls"), len(keys)), "ok": ok, "pixels": pixels}


def parse_labels(column, n: int) -> np.ndarray:
    """`cls` members (bytes like b"3", or missing) -> (n,) int64 with -1 for unknown."""
    labels = np.full(n, -1, dtype=np.int64)
    if column is None:
        return labels
    for index, value in enumerate(column):
        if isinstance(value, (bytes, bytearray)) and value.strip():
            labels[index] = int(value)
        elif isinstance(value, (int, np.integer)):
            labels[index] = int(value)
    return labels


def normalize(pixels, spec: ImageSpec):
    """(B, C, H, W) uint8 torch tensor -> float tensor scaled to [0, 1] and normalised."""
    import torch

    mean = torch.tensor(spec.mean[: spec.channels], device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std[: spec.channels], device=pixels.device).view(1, -1, 1, 1)
    return (pixels.float() / 255.0 - mean) / std
