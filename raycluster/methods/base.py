"""The interface every clustering method implements, so jobs and benchmarks treat them alike.

    method = hydra.utils.instantiate(cfg.method)   # constructor kwargs = the config
    method.fit(vectors, labels=None)               # (N, D) float32; labels only for logged metrics
    cluster, confidence = method.predict(vectors)  # (N,) int64 in [0, K), (N,) float32 in [0, 1]

Methods that train on Ray (Ray Train) do so inside `fit`; their constructor takes the resources
they need from config. `fit` may log metrics against labels when given, but its result must
not depend on them (no selection, no early stopping on labels).
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class ClusteringMethod:
    name: str = "base"

    def __init__(self, n_clusters: int):
        if n_clusters < 2:
            raise ValueError(f"n_clusters must be >= 2, got {n_clusters}")
        self.n_clusters = n_clusters

    def check_input(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) float32 contiguous, with N >= K; one clear error otherwise."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"{self.name}: expected embeddings of shape (N, D), got {vectors.shape}")
        if len(vectors) < self.n_clusters:
            raise ValueError(f"{self.name}: k={self.n_clusters} clusters is more than the {len(vectors)} samples")
        return vectors

    def fit(self, vectors: np.ndarray, labels: Optional[np.ndarray] = None) -> "ClusteringMethod":
        raise NotImplementedError

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError
