"""What happens to stored embeddings before a method sees them: optional PCA (whitened or not),
optional L2 norm.

The PCA is fitted once on a bounded uniform sample of the store and then applied batch by batch
wherever rows stream (fit, assignment, report), so the same transform reaches every row and its
state is O(pca_dim x D) whatever N is. It is saved beside the fitted method as a plain .npz
(no pickle) so `jobs/predict.py` applies exactly the training-time transform.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from raycluster.data.store import unit_rows

PCA_SAMPLE = 100_000   # rows the PCA is fitted on (its components settle long before this)


@dataclass
class Postprocess:
    """mean (D,) and components (pca_dim, D) float32 of a fitted PCA, or None for no PCA."""

    l2_normalize: bool = False
    mean: Optional[np.ndarray] = None
    components: Optional[np.ndarray] = None

    @classmethod
    def fit(cls, sample: np.ndarray, pca_dim: Optional[float], l2_normalize: bool, seed: int = 0,
            whiten: bool = False) -> "Postprocess":
        """Fit on a (n, D) sample of the store (all of it when the store is small). pca_dim: the
        components kept, or below 1 the share of the variance they must explain. whiten: each
        component divided by its standard deviation (folded into `components`), so cosine
        similarity weighs rare directions as much as the dominant ones: what near-duplicate
        search wants, where the few directions every photo shares say nothing about copies."""
        if not pca_dim:
            return cls(l2_normalize)
        from sklearn.decomposition import PCA

        if pca_dim >= 1 and pca_dim > min(sample.shape):   # a float below 1: the share of the variance kept
            raise ValueError(f"backbone.pca_dim={pca_dim} exceeds min(N, D) = {min(sample.shape)}")
        pca = PCA(pca_dim, random_state=seed).fit(sample)
        components = pca.components_
        if whiten:
            components = components / np.sqrt(np.maximum(pca.explained_variance_, 1e-12))[:, None]
        return cls(l2_normalize, pca.mean_.astype(np.float32), components.astype(np.float32))

    @property
    def out_dim(self) -> Optional[int]:
        return None if self.components is None else int(self.components.shape[0])

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(n, D) -> (n, pca_dim or D) float32 C-contiguous."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.components is not None:
            vectors = (vectors - self.mean) @ self.components.T
        if self.l2_normalize:
            vectors = unit_rows(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def fingerprint(self) -> dict:
        """What identifies the transform (a cached artifact built from its output depends on it)."""
        from raycluster.fingerprint import array_fingerprint

        return {"l2_normalize": self.l2_normalize,
                **({} if self.components is None else {"mean": array_fingerprint(self.mean),
                                                        "components": array_fingerprint(self.components)})}

    def save(self, path: str) -> None:
        import io

        from raycluster.io import atomic_write_bytes

        arrays = {"l2_normalize": np.array(self.l2_normalize)}
        if self.components is not None:
            arrays.update(mean=self.mean, components=self.components)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str) -> "Postprocess":
        import fsspec

        with fsspec.open(path, "rb") as handle, np.load(handle, allow_pickle=False) as arrays:
            return cls(bool(arrays["l2_normalize"]), arrays["mean"] if "mean" in arrays else None,
                       arrays["components"] if "components" in arrays else None)
