"""`method=diec`: DiEC behind the shared method interface; its three stages, each resumable.

fit(pixels) on pixel rows (N, C*H*W) in [0, 1] (`backbone=pixels`):
1. UNet: `unet` (a diffusers folder or hub name) is used as given; `unet: null` pretrains one
   on these images with Ray Train (`raycluster.diffusion.pretrain`, the same code as
   `jobs/pretrain_diffusion.py`) into `<work_dir>/pretrained`.
2. COL/COT: `layer`/`timestep` as given, or (null) the Ray Tune search of
   `raycluster.tune.layer_timestep` over `search.layers x search.timesteps`, writing
   `<work_dir>/search/` (search.json, heatmaps).
3. DEC fine-tune at (COL, COT) with Ray Train (`raycluster.methods.diec.model`), started from k-means
   on a UMAP embedding of the COL/COT embeddings (`manifold`; null: k-means on the embeddings);
   checkpoints per epoch under `<work_dir>/train`, resume by rerun. With `output="start"`
   (configs/method/diec.yaml) there is no fine-tune: the start is the output, and a row is
   assigned by its COL/COT embedding's vote among the start's fitted rows (`UMAPKMeans.predict`).
Each stage's output is reused by a rerun only when its inputs (settings, rows, the UNet it
read) are unchanged (`raycluster.fingerprint`); otherwise it is redone.
`stages` records each stage's seconds and, for the bench, the two starts' scores (k-means on the
COL/COT embeddings, and on their UMAP) when labels are given.
"""
from __future__ import annotations

import json
import logging
import os
import time
from typing import Optional

import numpy as np

from raycluster.fingerprint import array_fingerprint, local_paths_in, reusable, write_fingerprint
from raycluster.methods.base import TorchMethod
from raycluster.methods.start import StartOutput, check_manifold

log = logging.getLogger(__name__)


SEARCH_KEYS = {"layers", "timesteps", "subset", "draws", "cpus_per_trial", "max_concurrent", "criterion", "tie_tolerance",
               "noise_cells", "noise_seeds"}


class DiEC(StartOutput, TorchMethod):
    name = "diec"
    model_factory = "raycluster.methods.diec.model.build_diec"
    model_config_class = "raycluster.methods.diec.model.DiECConfig"

    def __init__(self, n_clusters: int, image_shape=(1, 28, 28), unet=None, pretrain: Optional[dict] = None,
                 layer: Optional[str] = None, timestep: Optional[int] = None, search: Optional[dict] = None,
                 model: Optional[dict] = None, optim: Optional[dict] = None, train: Optional[dict] = None,
                 manifold: Optional[dict] = None, use_gpu: bool = False, seed: int = 0, work_dir: str = "outputs/diec",
                 max_failures: int = 0, train_rows: Optional[int] = None, output: str = "finetuned"):
        super().__init__(n_clusters, model, optim, train, use_gpu, seed, max_failures)
        # "finetuned": DEC's nearest centre (the paper); "start": the label-free start on the COL/COT
        # embeddings, no fine-tune (why: docs/methods/diec.md)
        self.output = self.check_output(output)
        self.train_rows = train_rows
        self.image_shape = tuple(image_shape)
        self.pretrain = dict(pretrain or {})
        if set(self.pretrain) - {"unet", "optim", "ema_decay"}:
            raise ValueError(f"diec: unknown pretrain setting(s) {sorted(set(self.pretrain) - {'unet', 'optim', 'ema_decay'})}; "
                             "known: ['ema_decay', 'optim', 'unet']")
        self.layer, self.timestep = layer, timestep
        self.search = dict(search or {})
        from raycluster.tune.layer_timestep import check_criterion

        unknown = set(self.search) - SEARCH_KEYS
        if unknown:   # a typo here would otherwise be ignored until after the pretraining
            raise ValueError(f"diec: unknown search setting(s) {sorted(unknown)}; known: {sorted(SEARCH_KEYS)}")
        if self.search.get("tie_tolerance", 0.0) is None and min(self.search.get("noise_cells", 5),
                                                                 self.search.get("noise_seeds", 2)) < 1:
            raise ValueError("diec: search.tie_tolerance=null measures the criterion's noise: "
                             "search.noise_cells and search.noise_seeds must be >= 1")
        self.manifold = check_manifold(manifold, "diec")   # kmeans.UMAPKMeans settings; None: k-means start
        check_criterion(self.search.get("criterion", "silhouette"), has_start=self.manifold is not None)
        # Ray Tune trials and Train workers run in their own working directories: local paths
        # must be absolute before they are handed over.
        self.unet = os.path.abspath(unet) if isinstance(unet, str) and os.path.exists(unet) else unet
        self.work_dir = work_dir if "://" in work_dir else os.path.abspath(work_dir)

    # -- stage 1 -------------------------------------------------------------------------
    def pretrain_inputs(self, pixels: np.ndarray) -> dict:
        return {"pretrain": self.pretrain, "image_shape": self.image_shape, "seed": self.seed,
                "rows": array_fingerprint(pixels)}

    def pretrained_unet(self, pixels: np.ndarray) -> str:
        from raycluster.diffusion.pretrain import pretrain_unet

        if self.unet is not None:
            return self.unet
        directory = os.path.join(self.work_dir, "pretrained")
        inputs = self.pretrain_inputs(pixels)
        if reusable(directory, inputs, "DiEC's pretrained UNet", self.reuse):
            log.warning("DiEC: reusing the pretrained UNet in %s (same settings and rows)", directory)
            return directory
        start = time.time()
        self.stages["pretrain"] = pretrain_unet(
            pixels, self.image_shape, directory, unet=self.pretrain.get("unet", {}), optim=self.pretrain.get("optim", {}),
            train=self.train, use_gpu=self.use_gpu, storage_path=os.path.join(self.work_dir, "pretrain"), seed=self.seed,
            ema_decay=self.pretrain.get("ema_decay", 0.999), reuse=self.reuse)
        write_fingerprint(directory, inputs)
        self.stages["pretrain_seconds"] = time.time() - start
        return directory

    # -- stage 2 -------------------------------------------------------------------------
    def layer_and_timestep(self, pixels: np.ndarray, unet: str, labels=None, force: bool = False) -> tuple[str, int]:
        """(COL, COT): as configured, else a search result made from the same inputs, else (or
        with force) a new search."""
        from raycluster.methods.start import one_map
        from raycluster.tune.layer_timestep import search_layer_timestep

        if self.layer is not None and self.timestep is not None:
            return self.layer, int(self.timestep)
        directory = os.path.join(self.work_dir, "search")
        saved = os.path.join(directory, "search.json")
        inputs = {"unet": unet, "unet_files": local_paths_in(unet), "search": self.search, "image_shape": self.image_shape,
                  "n_clusters": self.n_clusters, "pool": self.model_overrides.get("pool", 1), "seed": self.seed,
                  "manifold": one_map(self.manifold) if self.manifold else None, "rows": array_fingerprint(pixels)}
        if not force and reusable(directory, inputs, "DiEC's COL/COT search", self.reuse) and os.path.exists(saved):
            with open(saved) as handle:
                found = json.load(handle)
            log.warning("DiEC: reusing the COL/COT search in %s (same UNet, settings and rows)", saved)
        else:
            start = time.time()
            result = search_layer_timestep(pixels, unet, self.image_shape, self.search.get("layers", ["mid"]),
                                           self.search.get("timesteps", [100]), self.n_clusters, directory,
                                           labels=labels, subset=self.search.get("subset", 2000),
                                           draws=self.search.get("draws", 2), seed=self.seed,
                                           pool=self.model_overrides.get("pool", 1),
                                           cpus_per_trial=self.search.get("cpus_per_trial", 1.0),
                                           max_concurrent=self.search.get("max_concurrent", 2),
                                           criterion=self.search.get("criterion", "silhouette"),
                                           tie_tolerance=self.search.get("tie_tolerance", 0.0),
                                           noise_cells=self.search.get("noise_cells", 5),
                                           noise_seeds=self.search.get("noise_seeds", 2),
                                           start_score=self.start_score())
            found = {"layer": result.layer, "timestep": result.timestep, "best_by_acc": result.best_by_acc,
                     "heatmaps": result.heatmaps}
            write_fingerprint(directory, inputs)
            self.stages["search_seconds"] = time.time() - start
        self.stages["search"] = {k: found[k] for k in ("layer", "timestep", "best_by_acc", "heatmaps")}
        log.warning("DiEC: COL %s, COT %d (label-free choice)", found["layer"], found["timestep"])
        return found["layer"], int(found["timestep"])

    def start_score(self):
        """The search's StartScore: this method's start (UMAP + its clusterer) on a trial's activations."""
        from functools import partial

        from raycluster.methods.start import manifold_separation

        return partial(manifold_separation, manifold=self.manifold) if self.manifold else None

    # -- stage 3 -------------------------------------------------------------------------
    def model_config(self, unet: str, layer: str, timestep: int, pixels: np.ndarray,
                     labels=None) -> tuple[dict, Optional[np.ndarray]]:
        """The fine-tune model's config and the initial clusters (N,) int64 (-1: outside UMAP's
        sample), or None. k-means on the COL/COT embeddings of all rows always runs (the bench's
        `init_kmeans` row); without `manifold` its centres start DEC (the paper's start); with it,
        UMAPKMeans' clusters (UMAP + `manifold.clusterer`) start it: centres are their means in the
        embedding space, and they are the first `initial_target_epochs`' target (with output=start,
        those clusters are the output)."""
        import torch

        from raycluster.methods.diec.model import cell_embeddings
        from raycluster.methods.start import fit_start

        start = time.time()
        config = {**self.model_overrides, "n_clusters": self.n_clusters, "unet": unet, "image_shape": self.image_shape,
                  "layer": layer, "timestep": timestep}
        probe, embeddings, scale = cell_embeddings(config, pixels, self.seed)
        fitted = fit_start(embeddings, self.n_clusters, self.seed, self.manifold, labels)
        centers, initial = fitted.centers, fitted.clusters
        self.keep_start(fitted)
        self.stages.update(fitted.scores)
        self.stages["init_seconds"] = round(time.time() - start, 1)
        config = {**config, "embedding_scale": scale, "centers": centers.tolist()}
        if self.output == "start":   # fitted now: the UNet the start's embeddings came from, and the start
            self._restore({"model_config": config, "model": {**probe.state_dict(), "centers": torch.from_numpy(centers)}})
        return config, initial

    def fit(self, vectors: np.ndarray, labels: Optional[np.ndarray] = None) -> "DiEC":
        from raycluster.methods.diec.model import build_diec
        from raycluster.train.run import fit_with_ray_train

        pixels = self.check_input(vectors)
        expected = int(np.prod(self.image_shape))
        if pixels.shape[1] != expected:
            raise ValueError(f"diec: rows have width {pixels.shape[1]}, image_shape {list(self.image_shape)} needs "
                             f"{expected} (DiEC reads pixels: backbone=pixels)")
        if self.unet is None:   # what the UNet it pretrains keeps of these images (label-free; warns when little)
            from raycluster.diffusion.unet import SMALL_UNET, check_input_resolution

            size = {**SMALL_UNET, **self.pretrain.get("unet", {})}["sample_size"]
            self.stages["input_kept_variance"] = check_input_resolution(
                pixels, self.image_shape, size, "diec", "method.pretrain.unet.sample_size=32")
        unet = self.pretrained_unet(pixels)
        layer, timestep = self.layer_and_timestep(pixels, unet, labels)
        config, initial = self.model_config(unet, layer, timestep, pixels, labels)
        log.warning("DiEC start: %s", {k: v for k, v in self.stages.items() if k.startswith("init")})
        if self.output == "start":
            log.warning("DiEC: the start is the output (method.output=start); no DEC fine-tune")
            return self
        start = time.time()
        state = fit_with_ray_train(build_diec, config, pixels, self.optim, self.train, self.use_gpu,
                                   os.path.join(self.work_dir, "train"), "diec", self.seed, labels, self.max_failures,
                                   context=None if initial is None else {"initial_clusters": initial}, reuse=self.reuse)
        self.stages["finetune_seconds"] = time.time() - start
        return self._restore(state)

    def start_features(self, rows):
        # seeded noise draws, as the start's embeddings were: a fitted row lands on (or next to) its copy
        return self.model.embeddings(rows, self.model.config.eval_draws, self.seed).numpy()

    # -- stages run alone (jobs/pretrain_diffusion.py, jobs/tune.py) -------------------------
    def pretrain_stage(self, vectors: np.ndarray) -> dict:
        """Stage 1 alone: the pretrained UNet that `fit` will reuse (same settings and rows)."""
        if self.unet is not None:
            raise ValueError(f"diec: method.unet={self.unet!r} is given, so there is nothing to pretrain")
        directory = self.pretrained_unet(self.check_input(vectors))
        return {"output": directory, **self.stages.get("pretrain", {"reused": True}),
                "next": f"python jobs/train.py ... with the same output_dir (or method.unet={directory})"}

    def check_search_settings(self, tune) -> None:
        """DiEC's search settings are `method.search`, checked when the method is built."""

    def label_free_search(self, vectors: np.ndarray, labels: Optional[np.ndarray], tune, output_dir: str) -> dict:
        """Stage 2 alone, searched again even when a result exists: the (layer, timestep) grid of
        `method.search`, written to <work_dir>/search where `fit` reuses it (`tune` and
        output_dir are not used: DiEC's search has its own settings)."""
        pixels = self.check_input(vectors)
        unet = self.unet if self.unet is not None else os.path.join(self.work_dir, "pretrained")
        if self.unet is None and not os.path.exists(os.path.join(unet, "unet", "config.json")):
            raise FileNotFoundError(f"no pretrained UNet in {unet}: run jobs/pretrain_diffusion.py with the same "
                                    "overrides first, or pass method.unet=<diffusers folder or hub name>")
        start = time.time()
        self.layer, self.timestep = None, None
        layer, timestep = self.layer_and_timestep(pixels, unet, labels, force=True)   # fit reuses what it finds
        found = self.stages["search"]
        return {"layer": layer, "timestep": timestep, "criterion": self.search.get("criterion", "silhouette"),
                "best_by_acc": found["best_by_acc"], "heatmaps": found["heatmaps"],
                "search": os.path.join(self.work_dir, "search", "search.json"), "seconds": round(time.time() - start, 1)}
