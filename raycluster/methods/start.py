"""Where a clustering head starts (DiEC's DEC centres, DiFiC's prototypes, CLUDI's warm start):
k-means on the features, or `UMAPKMeans` on them: a UMAP embedding and its clusterer (k-means or
a Gaussian mixture), with its smallest-cluster check and UMAP-seed consensus when set."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from raycluster.methods.kmeans.method import FaissKMeans
from raycluster.methods.kmeans.umap import UMAPKMeans, map_separation


def manifold_kmeans(vectors: np.ndarray, n_clusters: int, **settings) -> np.ndarray:
    """vectors (N, D) float32 -> clusters (N,) int64 of `UMAPKMeans(n_clusters, **settings)` fitted
    on them, -1 for rows outside its UMAP sample."""
    return UMAPKMeans(n_clusters, **settings).fit(vectors).fit_clusters


def check_manifold(manifold: Optional[dict], method: str) -> Optional[dict]:
    """A method's `manifold` setting (UMAPKMeans keyword arguments, or None: no UMAP), with one
    readable error for a key UMAPKMeans does not take (a typo would otherwise surface late)."""
    import inspect

    if not manifold:
        return None
    known = set(inspect.signature(UMAPKMeans).parameters) - {"n_clusters", "seed", "use_gpu"}
    if set(manifold) - known:
        raise ValueError(f"{method}: unknown manifold setting(s) {sorted(set(manifold) - known)}; known: {sorted(known)}")
    return dict(manifold)


def embedding_scale(embeddings: np.ndarray) -> float:
    """(N, D) -> the root mean per-dimension variance (+1e-8): what DiEC divides its activations by,
    so UMAP's Euclidean neighbourhoods and DEC's Student-t see unit-scale rows."""
    return float(np.sqrt((embeddings.std(0) ** 2).mean()) + 1e-8)


def one_map(manifold: dict) -> dict:
    """`manifold` fitted once (no `umap_restarts`): what `manifold_separation` scores, since a
    consensus of several maps has no one map to measure separation in."""
    return {key: value for key, value in manifold.items() if key != "umap_restarts"}


def manifold_separation(embeddings: np.ndarray, n_clusters: int, seed: int = 0, *, manifold: dict) -> tuple[float, np.ndarray]:
    """(N, D) float -> (mean silhouette of UMAPKMeans(**manifold)'s clusters in its UMAP space,
    (N,) those clusters): the start fitted on these rows (scaled as DiEC scales its embeddings, one map: `one_map`),
    and how well its clusters separate where they are made. DiEC's search scores every
    (layer, timestep) by it (`tune.layer_timestep.StartScore`, with `manifold` bound)."""
    scaled = embeddings / embedding_scale(embeddings)   # as DiEC.model_config scales
    start = UMAPKMeans(n_clusters, seed=seed, **{**one_map(manifold), "max_points": len(embeddings)}).fit(scaled)
    return map_separation(start.embedded, start.fitted_clusters, seed), start.fit_clusters


def cluster_means(vectors: np.ndarray, clusters: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """(N, D) vectors, (N,) int cluster ids (-1: not clustered) -> (K, D) mean of each cluster's
    rows, K = len(fallback); a cluster with no rows keeps its row of `fallback` (K, D)."""
    return np.stack([vectors[clusters == k].mean(0) if (clusters == k).any() else fallback[k]
                     for k in range(len(fallback))]).astype(np.float32)


@dataclass
class Start:
    """A fitted label-free start: centers (K, D) float32; clusters (N,) int64 of the fitted rows
    with `manifold` (-1 outside UMAP's sample), else None; starter, the fitted FaissKMeans or
    UMAPKMeans whose `predict` gives any row its start cluster; scores (see `start_clusters`)."""
    centers: np.ndarray
    clusters: Optional[np.ndarray]
    starter: Union[FaissKMeans, UMAPKMeans]
    scores: dict = field(default_factory=dict)


def start_clusters(vectors: np.ndarray, n_clusters: int, seed: int = 0, manifold: Optional[dict] = None,
                   labels: Optional[np.ndarray] = None) -> tuple[np.ndarray, Optional[np.ndarray], dict]:
    """`fit_start`'s (centers, clusters, scores)."""
    start = fit_start(vectors, n_clusters, seed, manifold, labels)
    return start.centers, start.clusters, start.scores


def fit_start(vectors: np.ndarray, n_clusters: int, seed: int = 0, manifold: Optional[dict] = None,
              labels: Optional[np.ndarray] = None) -> Start:
    """Where a clustering head starts (DiEC's DEC centres, DiFiC's prototypes), from (N, D) float32.

    k-means on `vectors` always runs (its scores are the papers' "k-means on the features" row);
    with `manifold` (UMAPKMeans settings) the start is UMAPKMeans' clusters instead (UMAP + its
    `clusterer`) and the centres are those clusters' means in `vectors`' space.
    Start: centres (K, D) float32; the manifold clusters (N,) int64 (-1 outside UMAP's sample)
    or None; {"start_size_entropy": the start's label-free size entropy, "start_umap_neighbors": the
    UMAP neighbourhood the start kept (with `manifold`; see UMAPKMeans' min_cluster_share), with
    `manifold.umap_restarts` > 1 "start_umap_agreement" (each fit's ARI with their consensus), and "init_kmeans",
    "init_manifold": supervised scores when all labels are known}."""
    from raycluster.metrics import size_entropy, supervised_metrics

    scored = labels is not None and (np.asarray(labels) >= 0).all()
    kmeans = FaissKMeans(n_clusters, seed=seed).fit(vectors)
    clusters, _ = kmeans.predict(vectors)
    centers, initial, scores, starter = kmeans.centroids, None, {}, kmeans
    if scored:
        scores["init_kmeans"] = supervised_metrics(labels, clusters)
    if manifold is not None:
        starter = UMAPKMeans(n_clusters, seed=seed, **manifold).fit(vectors)
        initial = starter.fit_clusters
        centers = cluster_means(vectors, initial, centers)
        scores["start_umap_neighbors"] = starter.used_neighbors
        if starter.restart_agreement:   # how far each UMAP seed's fit agreed with the consensus (UMAPKMeans' umap_restarts)
            scores["start_umap_agreement"] = starter.restart_agreement
        if scored:
            sampled = initial >= 0
            scores["init_manifold"] = supervised_metrics(np.asarray(labels)[sampled], initial[sampled])
    start = clusters if initial is None else initial[initial >= 0]
    scores["start_size_entropy"] = size_entropy(start, n_clusters)
    return Start(np.asarray(centers, np.float32), initial, starter, scores)


# What a method with a label-free start outputs: "finetuned", its trained head (the paper's);
# "start", the start itself, no head training (why: docs/methods/diec.md, docs/methods/dific.md).
OUTPUTS = {"finetuned", "start"}


class StartOutput:
    """Mixin for a TorchMethod (listed before it) whose output may be its label-free start.

    With `output="start"` the method keeps the start's fitted starter (`keep_start`) and assigns a
    row by `starter.predict` on the row's `start_features`; the starter is saved and loaded beside
    the model. The class sets `manifold` (the start's UMAPKMeans settings or None)."""
    output = "finetuned"
    starter = None   # the fitted FaissKMeans / UMAPKMeans that assigns rows (output=start)
    manifold = None

    def check_output(self, output: str) -> str:
        if output not in OUTPUTS:
            raise ValueError(f"{self.name}: output must be one of {sorted(OUTPUTS)}, got {output!r}")
        return output

    def keep_start(self, start: Start) -> None:
        if self.output == "start":
            self.starter = start.starter

    def start_features(self, rows):
        """(N, F) float32 torch rows -> (N, D) float32 numpy features, made as the start's were."""
        raise NotImplementedError

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The start's assignment (cluster int64, confidence float32) with output=start, else the model's."""
        import torch

        from raycluster.train.loop import shared_tensor

        if self.starter is None:
            return self._predict_with_model(vectors)
        rows = self.check_input(vectors)
        if rows.shape[1] != self.model.config.feature_dim:
            raise ValueError(f"{self.name}: rows have width {rows.shape[1]}, the method was fitted on "
                             f"{self.model.config.feature_dim}")
        return self.starter.predict(np.ascontiguousarray(self.start_features(shared_tensor(rows, torch.float32)), np.float32))

    def fitted_state(self) -> tuple[dict, dict]:
        arrays, values = super().fitted_state()
        if self.starter is not None:
            start_arrays, values["start"] = self.starter.fitted_state()
            arrays.update({f"start.{name}": array for name, array in start_arrays.items()})
        return arrays, values

    def restore_fitted(self, arrays: dict, values: dict):
        start = {name[len("start."):]: array for name, array in arrays.items() if name.startswith("start.")}
        super().restore_fitted({name: array for name, array in arrays.items() if not name.startswith("start.")}, values)
        if start:
            starter = (UMAPKMeans(self.n_clusters, seed=self.seed, **self.manifold) if self.manifold
                       else FaissKMeans(self.n_clusters, seed=self.seed))
            self.starter = starter.restore_fitted(start, values["start"])
        return self
