"""`method=temi`: TEMI behind the shared method interface; k-NN pairs from raycluster.neighbors,
heads trained with Ray Train (same wiring as CLUDI)."""
from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from raycluster.methods.base import TorchMethod
from raycluster.neighbors.index import IndexSpec

log = logging.getLogger(__name__)


class TEMI(TorchMethod):
    """fit: k-NN table (sharded FAISS index over the training vectors), then TorchTrainer
    (resumable per epoch); predict: the lowest-loss teacher head, in-process.

    model: TemiConfig fields except n_clusters / feature_dim; optim: OptimConfig fields;
    train: TrainConfig fields; index: IndexSpec fields for the neighbour search;
    index_shards: shards of that index.
    """

    name = "temi"
    model_factory = "raycluster.methods.temi.model.build_temi"
    model_config_class = "raycluster.methods.temi.model.TemiConfig"

    def __init__(self, n_clusters: int, model: Optional[dict] = None, optim: Optional[dict] = None,
                 train: Optional[dict] = None, index: Optional[dict] = None, index_shards: int = 1,
                 use_gpu: bool = False, seed: int = 0, storage_path: str = "outputs/train", run_name: str = "temi",
                 max_failures: int = 0, train_rows: Optional[int] = None):
        super().__init__(n_clusters, model, optim, train, use_gpu, seed, max_failures)
        self.train_rows = train_rows
        self.index_spec = IndexSpec(**(index or {"kind": "flat"}))
        self.index_shards = index_shards
        self.storage_path, self.run_name = storage_path, run_name
        self.knn_seconds = 0.0

    def model_config(self, feature_dim: int) -> dict:
        return {**self.model_overrides, "n_clusters": self.n_clusters, "feature_dim": feature_dim,
                "epochs": self.optim.epochs}

    def neighbor_table(self, vectors: np.ndarray, k: int) -> np.ndarray:
        """(N, k) int64 neighbour row ids (cosine), self excluded."""
        from raycluster.neighbors.graph import neighbor_table

        if k >= len(vectors):
            raise ValueError(f"temi: knn={k} neighbours need more than {len(vectors)} samples")
        start = time.time()
        table = neighbor_table(vectors, k, self.index_spec, self.index_shards, self.seed)
        self.knn_seconds = time.time() - start
        return table

    def fit(self, vectors: np.ndarray, labels: Optional[np.ndarray] = None) -> "TEMI":
        from raycluster.methods.temi.model import build_temi
        from raycluster.train.run import fit_with_ray_train

        vectors = self.check_input(vectors)
        config = self.model_config(vectors.shape[1])
        table = self.neighbor_table(vectors, config.get("knn", 50))
        state = fit_with_ray_train(build_temi, config, vectors, self.optim, self.train, self.use_gpu,
                                   self.storage_path, self.run_name, self.seed, labels, self.max_failures,
                                   context={"bank": vectors, "neighbors": table}, reuse=self.reuse)
        return self._restore(state)

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._predict_with_model(vectors)
