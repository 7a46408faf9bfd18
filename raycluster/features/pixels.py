"""`pixels`: raw pixel values as the embedding, for tiny images (digits, MNIST)."""
from __future__ import annotations

from typing import Optional

from raycluster.data.transforms import ImageSpec
from raycluster.features.base import Extractor


class Flatten:
    """(B, C, H, W) -> (B, C*H*W); a module so the base class can call it like a model."""

    def to(self, device):
        return self

    def eval(self):
        return self

    def __call__(self, images):
        return images.flatten(1)


class PixelsExtractor(Extractor):
    """Embedding = pixel values in [0, 1], flattened (B, C*H*W). PCA, when wanted, is applied
    to the whole store before clustering (backbone.pca_dim), since it must see every sample."""

    def __init__(self, size: Optional[int] = None, channels: int = 1, **runtime):
        super().__init__(size=size, channels=channels, **runtime)

    @classmethod
    def image_spec(cls, size: Optional[int] = None, channels: int = 1) -> ImageSpec:
        return ImageSpec(size=size, channels=channels, interpolation="bilinear", crop_pct=1.0,
                         mean=(0.0,) * 3, std=(1.0,) * 3)

    def build(self, **config):
        return Flatten()
