"""The extractor contract shared by every backbone.

An extractor is a callable class; extraction's actors (`extract.ShardEmbedder`) build one each:
- `image_spec(**config)` (classmethod, runs on the driver, cheap): how images must be decoded.
- `weights_note(**config)` (classmethod): one line for the job summary saying what the
  weights are, e.g. "random init: features are not meaningful".
- `__init__(**config, device, autocast, torch_threads, forward_rows)`: loads the model once per actor.
- `__call__(batch)`: decoded batch (`pixels` (B, C, H, W) uint8, `ok` (B,) bool, ...) -> same
  batch without `pixels`, plus `embedding` (B, D) float32 (zeros where ok is False).
Subclasses implement `build(**config) -> torch.nn.Module` mapping normalised images to (B, D),
and set `channels_last = True` when the model is a convnet: its weights and inputs are then kept
channels-last (NHWC), the layout oneDNN's CPU convolutions and cuDNN's tensor cores run fastest in.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Optional

import numpy as np

from raycluster.data.transforms import ImageSpec, normalize

log = logging.getLogger(__name__)


class Extractor:
    channels_last = False

    def __init__(self, device: Optional[str] = None, autocast: Optional[str] = None,
                 torch_threads: Optional[int] = None, forward_rows: Optional[int] = None, **config):
        """forward_rows: rows per forward pass (a batch runs in pieces of this size); None: whole."""
        import torch

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.autocast_dtype = getattr(torch, autocast) if autocast else None
        self.forward_rows = forward_rows
        self.spec = self.image_spec(**config)
        self.model = self.build(**config).to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        log.info("%s ready on %s (%d torch threads)", type(self).__name__, self.device, torch.get_num_threads())

    @classmethod
    def image_spec(cls, **config) -> ImageSpec:
        raise NotImplementedError

    @classmethod
    def weights_note(cls, **config) -> str:
        return "no learned weights"

    def build(self, **config):
        raise NotImplementedError

    def layout(self, images):
        """(B, C, H, W) float images in the memory layout the model was built for."""
        import torch

        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def __call__(self, batch: dict) -> dict:
        import torch

        ok = batch["ok"]
        pixels = batch.pop("pixels")
        embedding = None
        if ok.any():
            inputs = torch.from_numpy(pixels[ok]).to(self.device, non_blocking=True)
            autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                        if self.autocast_dtype else nullcontext())
            with torch.inference_mode(), autocast:
                features = torch.cat([self.model(self.layout(normalize(piece, self.spec))).float().cpu()
                                      for piece in inputs.split(self.forward_rows or len(inputs))])
            features = features.numpy()
            embedding = np.zeros((len(ok), features.shape[1]), dtype=np.float32)
            embedding[ok] = features
        else:  # a batch of only corrupt samples: width unknown here, the writer drops them
            embedding = np.zeros((len(ok), 0), dtype=np.float32)
        batch["embedding"] = embedding
        return batch
