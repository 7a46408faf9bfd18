"""`method=cludi`: CLUDI behind the shared method interface, trained with Ray Train."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from raycluster.config import TrainConfig
from raycluster.methods.base import TorchMethod
from raycluster.train.loop import OptimConfig

log = logging.getLogger(__name__)


class CLUDI(TorchMethod):
    """fit: TorchTrainer over the embeddings (resumable per epoch); predict: DDIM draws in-process.

    model: CludiConfig fields except n_clusters / feature_dim (taken from the data);
    optim: OptimConfig fields; train: TrainConfig fields (workers and their resources).
    """

    name = "cludi"
    model_factory = "raycluster.methods.cludi.build_cludi"
    model_config_class = "raycluster.methods.cludi.CludiConfig"

    def __init__(self, n_clusters: int, model: Optional[dict] = None, optim: Optional[dict] = None,
                 train: Optional[dict] = None, use_gpu: bool = False, seed: int = 0,
                 storage_path: str = "outputs/train", run_name: str = "cludi", max_failures: int = 0):
        super().__init__(n_clusters)
        self.model_overrides = self.checked_overrides(model)
        self.optim = OptimConfig(**(optim or {}))
        self.train = TrainConfig(**(train or {}))
        self.use_gpu, self.seed, self.max_failures = use_gpu, seed, max_failures
        self.storage_path, self.run_name = storage_path, run_name
        self.model = None

    def model_config(self, feature_dim: int) -> dict:
        return {**self.model_overrides, "n_clusters": self.n_clusters, "feature_dim": feature_dim}

    def fit(self, vectors: np.ndarray, labels: Optional[np.ndarray] = None) -> "CLUDI":
        from raycluster.methods.cludi import build_cludi
        from raycluster.train.run import fit_with_ray_train

        vectors = self.check_input(vectors)
        config = self.model_config(vectors.shape[1])
        state = fit_with_ray_train(build_cludi, config, vectors, self.optim, self.train, self.use_gpu,
                                   self.storage_path, self.run_name, self.seed, labels, self.max_failures, reuse=self.reuse)
        return self._restore(state)

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        torch.manual_seed(self.seed)   # the DDIM draws are random: same seed, same assignments
        return self._predict_with_model(vectors)

    def check_search_settings(self, tune) -> None:
        from raycluster.methods.cludi import CludiConfig

        unknown = sorted(set(tune.space) - set(CludiConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"tune.space names {unknown}, which are not {self.name} model hyperparameters")

    def label_free_search(self, vectors: np.ndarray, labels: Optional[np.ndarray], tune, output_dir: str) -> dict:
        """ASHA over `tune.space` (model hyperparameters), chosen by silhouette (raycluster.tune.asha)."""
        from dataclasses import asdict

        from raycluster.tune.asha import asha_search

        self.check_search_settings(tune)
        optim = asdict(self.optim)
        optim["epochs"] = tune.epochs or optim["epochs"]
        return asha_search(vectors, self.model_factory, self.model_config(vectors.shape[1]), optim, tune.space,
                           output_dir, labels, tune.num_samples, tune.grace_period, tune.reduction_factor,
                           tune.max_concurrent, tune.cpus_per_trial, self.seed)
