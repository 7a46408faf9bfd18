"""`method=dific`: DiFiC behind the shared method interface; two Ray Train stages, each resumable.

fit(pixels) on pixel rows (N, C*H*W) in [0, 1] (`backbone=pixels`):
1. Warm-up (semantic distillation + object concentration): extractor (+ from-scratch UNet and
   text encoder) trained by the masked denoising loss alone; checkpoints per epoch under
   `<work_dir>/warmup`, the final weights in `<work_dir>/distilled/model.pt` (reused by a rerun
   when its settings and rows are unchanged, `raycluster.fingerprint`).
2. Between the stages: S* of every row; the warm-up clusters (k-means on S*, scores in
   `stages["init_kmeans"]` when labels are given; with `manifold` set, UMAPKMeans on S*: UMAP +
   `manifold.clusterer`, `stages["init_manifold"]`), whose mean directions are the head's initial prototypes;
   and the k-NN graph of S* (sharded FAISS index on Ray actors, raycluster.neighbors).
3. Guidance: the same model plus the clustering head, trained with denoising + neighbour
   consistency + balance, starting from the warm-up weights; every worker holds all pixel rows
   and the k-NN table (object store) to look neighbours up. Checkpoints under `<work_dir>/guidance`.
With `output="start"` (configs/method/dific.yaml) there is no guidance stage: the warm-up clusters
are the output, and a row is assigned by its S*'s vote among the warm-up clusters' rows.
`<work_dir>/masks.png`: the object masks of a few images at the mask timestep, after training.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Optional

import numpy as np

from raycluster.data.store import unit_rows
from raycluster.fingerprint import array_fingerprint, reusable, write_fingerprint
from raycluster.methods.base import TorchMethod
from raycluster.methods.start import StartOutput, check_manifold
from raycluster.neighbors.index import IndexSpec
from raycluster.train.loop import OptimConfig

log = logging.getLogger(__name__)


class DiFiC(StartOutput, TorchMethod):
    name = "dific"
    model_factory = "raycluster.methods.dific.model.build_dific"
    model_config_class = "raycluster.methods.dific.model.DiFiCConfig"

    def __init__(self, n_clusters: int, image_shape=(1, 28, 28), model: Optional[dict] = None,
                 warmup: Optional[dict] = None, optim: Optional[dict] = None, train: Optional[dict] = None,
                 knn: int = 10, manifold: Optional[dict] = None, index: Optional[dict] = None,
                 index_shards: int = 1, use_gpu: bool = False,
                 seed: int = 0, work_dir: str = "outputs/dific", max_failures: int = 0, mask_examples: int = 12,
                 train_rows: Optional[int] = None, output: str = "finetuned"):
        super().__init__(n_clusters, model, optim, train, use_gpu, seed, max_failures)
        # "finetuned": the neighbour-guided head (the paper); "start": the warm-up clusters, no
        # guidance stage (why: docs/methods/dific.md)
        self.output = self.check_output(output)
        self.train_rows = train_rows
        self.image_shape = tuple(image_shape)
        self.warmup = OptimConfig(**(warmup or {}))   # the distillation stage's schedule
        # self.optim (TorchMethod): the guidance stage's schedule
        if self.optim.stop:
            raise ValueError("dific: optim.stop (the guidance stage) is not supported; the warm-up's is warmup.stop")
        self.knn, self.index_spec, self.index_shards = knn, IndexSpec(**(index or {"kind": "flat"})), index_shards
        self.manifold = check_manifold(manifold, "dific")   # kmeans.UMAPKMeans settings; None: k-means on S*
        # Ray Train workers run in their own working directories: paths must be absolute
        self.work_dir = work_dir if "://" in work_dir else os.path.abspath(work_dir)
        self.mask_examples = mask_examples

    def base_config(self) -> dict:
        return {**self.model_overrides, "n_clusters": self.n_clusters, "image_shape": self.image_shape}

    def _train(self, config: dict, pixels: np.ndarray, optim: OptimConfig, stage: str, labels=None,
               context: Optional[dict] = None, held_out: Optional[np.ndarray] = None) -> dict:
        from raycluster.methods.dific.model import build_dific
        from raycluster.train.run import fit_with_ray_train, stop_outcome

        start = time.time()
        state = fit_with_ray_train(build_dific, config, pixels, optim, self.train, self.use_gpu, self.work_dir,
                                   stage, self.seed, labels, self.max_failures, context=context, reuse=self.reuse,
                                   held_out=held_out)
        self.stages[f"{stage}_seconds"] = round(time.time() - start, 1)
        self.stages[f"{stage}_epochs_run"] = state["epoch"] + 1   # what `steps` came to on these rows
        self.stages.update({f"{stage}_{key}": value for key, value in stop_outcome(state).items()
                            if optim.stop or key == "steps"})
        return state

    # -- stage 1 -------------------------------------------------------------------------
    def distilled(self, pixels: np.ndarray) -> str:
        """The warm-up model's state file, trained now or reused from an earlier run."""
        import io

        import torch

        from raycluster.io import atomic_write_bytes

        directory = os.path.join(self.work_dir, "distilled")
        path = os.path.join(directory, "model.pt")
        config = {**self.base_config(), "guidance": False}
        inputs = {"model_config": config, "warmup": asdict(self.warmup), "seed": self.seed,
                  "rows": array_fingerprint(pixels)}
        if reusable(directory, inputs, "DiFiC's warm-up model", self.reuse) and os.path.exists(path):
            log.warning("DiFiC: reusing the warm-up model %s (same settings and rows)", path)
            return path
        # with warmup.stop, a random tenth (at most held_out_rows) is kept out of training to watch
        # for the plateau; every row is still clustered
        trained, held_out = self.warmup.stop.hold_out(pixels, self.seed) if self.warmup.stop else (pixels, None)
        state = self._train(config, trained, self.warmup, "warmup", held_out=held_out)
        buffer = io.BytesIO()
        torch.save({"model": state["model"], "model_config": state["model_config"]}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        write_fingerprint(directory, inputs)
        return path

    # -- stage 2 -------------------------------------------------------------------------
    def warmup_clusters(self, warmup: str, pixels: np.ndarray, labels=None) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """The head's initial prototypes (K, word_dim) float32 from the warm-up clusters of S*, and
        the k-NN table (N, knn) int64 of S* (None with output=start and no labels: nothing reads it).

        k-means on S* always runs (its scores are the paper's "k-means on S*" row); with `manifold`
        set the clusters and prototypes come from UMAPKMeans on S* instead (UMAP + `manifold.clusterer`),
        the prototypes being the mean directions of S* in each cluster."""
        import torch

        from raycluster.methods.dific.model import build_dific
        from raycluster.methods.start import fit_start
        from raycluster.neighbors.graph import neighbor_table

        start = time.time()
        scored = labels is not None and (labels >= 0).all()
        model = build_dific({**self.base_config(), "guidance": False, "init_from": warmup})
        words = model.embed(torch.from_numpy(pixels)).numpy()
        normalised = unit_rows(words)   # the head is cosine
        start_fit = fit_start(normalised, self.n_clusters, self.seed, self.manifold, labels)
        self.keep_start(start_fit)
        self.stages.update(start_fit.scores)
        table = None   # the k-NN graph: what guidance reads, and a measure of S* when labels are known
        if self.output == "finetuned" or scored:
            table = neighbor_table(normalised, self.knn, self.index_spec, self.index_shards, self.seed)
        if scored:
            self.stages["knn_label_agreement"] = round(float((labels[table] == labels[:, None]).mean()), 4)
        self.stages["warmup_clusters_seconds"] = round(time.time() - start, 1)
        log.warning("DiFiC warm-up: %s", {k: v for k, v in self.stages.items() if not k.startswith("init_")})
        return start_fit.centers, table

    # -- stage 3 -------------------------------------------------------------------------
    def fit(self, vectors: np.ndarray, labels: Optional[np.ndarray] = None) -> "DiFiC":
        pixels = self.check_input(vectors)
        expected = int(np.prod(self.image_shape))
        if pixels.shape[1] != expected:
            raise ValueError(f"dific: rows have width {pixels.shape[1]}, image_shape {list(self.image_shape)} needs "
                             f"{expected} (DiFiC reads pixels: backbone=pixels)")
        if self.knn >= len(pixels):
            raise ValueError(f"dific: knn={self.knn} neighbours need more than {len(pixels)} samples")
        if not self.model_overrides.get("pretrained"):   # what the from-scratch UNet keeps of these images
            from raycluster.diffusion.unet import check_input_resolution
            from raycluster.methods.dific.model import SMALL_CONDITIONAL_UNET

            size = (self.model_overrides.get("image_size")
                    or {**SMALL_CONDITIONAL_UNET, **self.model_overrides.get("unet", {})}["sample_size"])
            self.stages["input_kept_variance"] = check_input_resolution(
                pixels, self.image_shape, size, "dific", "method.model.image_size=32 method.model.unet.sample_size=32")
        warmup = self.distilled(pixels)
        centers, table = self.warmup_clusters(warmup, pixels, labels)
        if self.output == "start":
            import torch

            log.warning("DiFiC: the warm-up clusters are the output (method.output=start); no guidance stage")
            self._restore(torch.load(warmup, map_location="cpu", weights_only=True))
            self.save_masks(pixels)
            return self
        config = {**self.base_config(), "guidance": True, "centers": centers.tolist(), "init_from": warmup}
        if config.get("mask_start_epoch", 0) > 0:   # the warm-up trained the attention: masks from the start
            config["mask_start_epoch"] = 0
        state = self._train(config, pixels, self.optim, "guidance", labels, context={"bank": pixels, "neighbors": table})
        self._restore(state)
        self.save_masks(pixels)
        return self

    def _restore(self, state: dict) -> "DiFiC":
        # the warm-up file only seeds training; a restored model has all its weights in `state`
        state = {**state, "model_config": {k: v for k, v in state["model_config"].items() if k != "init_from"}}
        return super()._restore(state)

    def save_masks(self, pixels: np.ndarray) -> None:
        """`<work_dir>/masks.png`: images, their object masks at the mask timestep, and the product."""
        import torch

        from raycluster.report.plots import masks_png

        count = min(self.mask_examples, len(pixels))
        chosen = np.random.default_rng(self.seed).choice(len(pixels), count, replace=False)
        masks = self.model.masks(torch.from_numpy(pixels[chosen])).numpy()
        channels, height, width = self.image_shape
        images = pixels[chosen].reshape(count, channels, height, width).mean(1)
        path = os.path.join(self.work_dir, "masks.png")
        masks_png(path, images, masks, f"proxy-token cross-attention masks at t={self.model.config.mask_timestep}")
        self.stages["masks_png"] = path

    def start_features(self, rows):
        return unit_rows(self.model.embed(rows).numpy())   # S*, unit length as the warm-up clusters saw it
