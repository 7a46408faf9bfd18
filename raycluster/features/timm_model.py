"""timm backbones (ViTs, EfficientNets, ...) -> pooled embeddings (B, num_features).

Weights, in order of precedence:
- `checkpoint=PATH`: a local state dict (timm.models.load_checkpoint: accepts raw state dicts
  and {"state_dict" | "model": ...} wrappers, strips DDP "module." prefixes), strict;
- `pretrained=true`: timm downloads from the Hugging Face hub (needs network);
- neither: random init, and every summary says the features are not meaningful.
"""
from __future__ import annotations

import logging
from typing import Optional

from raycluster.data.transforms import ImageSpec
from raycluster.errors import CheckpointError
from raycluster.features.base import Extractor

log = logging.getLogger(__name__)


def create_timm_model(model_name: str, pretrained: bool = False, checkpoint: Optional[str] = None,
                      img_size: Optional[int] = None):
    """Build a timm model with its classifier removed, so forward() returns pooled features."""
    import timm

    kwargs = {"num_classes": 0}
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        model = timm.create_model(model_name, pretrained=pretrained and checkpoint is None, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"timm has no model named {model_name!r}") from None
        raise
    except Exception as err:  # hub errors: no network, no such repo, ...
        if pretrained:
            raise RuntimeError(
                f"could not load pretrained weights for {model_name!r} from the hub ({type(err).__name__}: {err}); "
                "with no network, pass backbone.extractor.checkpoint=/path/to/weights") from None
        raise
    if checkpoint is not None:
        load_checkpoint_strict(model, checkpoint)
    return model


def load_checkpoint_strict(model, path: str) -> None:
    """Load a local checkpoint into `model`; one readable error on any key or shape mismatch."""
    import os

    import timm

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        timm.models.load_checkpoint(model, path, strict=True)
    except RuntimeError as err:
        first_lines = "; ".join(str(err).splitlines()[:3])[:400]
        raise CheckpointError(f"checkpoint {path!r} does not fit {type(model).__name__}: {first_lines}") from None


class TimmExtractor(Extractor):
    def __init__(self, model_name: str, pretrained: bool = False, checkpoint: Optional[str] = None,
                 img_size: Optional[int] = None, **runtime):
        super().__init__(model_name=model_name, pretrained=pretrained, checkpoint=checkpoint,
                         img_size=img_size, **runtime)
        if not pretrained and checkpoint is None:
            log.warning("%s", self.weights_note(model_name, pretrained, checkpoint))

    @classmethod
    def image_spec(cls, model_name: str, img_size: Optional[int] = None, **_) -> ImageSpec:
        """The model's own eval preprocessing (timm's data config), read off a meta-device model."""
        import timm
        import torch

        with torch.device("meta"):
            model = create_timm_model(model_name, img_size=img_size)
        args = {"input_size": (3, img_size, img_size)} if img_size else {}
        return ImageSpec.from_timm(timm.data.resolve_data_config(args, model=model))

    @classmethod
    def weights_note(cls, model_name: str, pretrained: bool = False, checkpoint: Optional[str] = None, **_) -> str:
        if checkpoint:
            return f"{model_name}: weights from checkpoint {checkpoint}"
        if pretrained:
            return f"{model_name}: pretrained weights from the hub"
        return f"WARNING {model_name}: random init, no weights loaded: features are NOT meaningful"

    def build(self, model_name: str, pretrained: bool = False, checkpoint: Optional[str] = None,
              img_size: Optional[int] = None):
        return create_timm_model(model_name, pretrained, checkpoint, img_size)
