"""`method=cludi`: CLUDI behind the shared method interface, trained with Ray Train."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from raycluster.methods.base import TorchMethod

log = logging.getLogger(__name__)


class CLUDI(TorchMethod):
    """fit: TorchTrainer over the embeddings (resumable per epoch); predict: DDIM draws in-process.

    model: CludiConfig fields except n_clusters / feature_dim (taken from the data);
    optim: OptimConfig fields; train: TrainConfig fields (workers and their resources).
    With `model.warm_start_epochs` > 0 the first epochs' teacher is a label-free clustering of the
    training rows (spherical k-means; with `manifold`, UMAPKMeans: UMAP + its clusterer): from a
    random start the teacher's DDIM chain gives every point the same cluster, and the student
    can stay there (seen on Lite0 photo features: size entropy 0 from epoch 2).
    input_dim: rows wider than this are first reduced by a PCA fitted on (a sample of) them. The
    denoiser's width grows with its input (F + F/2), so 1280-d Lite0 features made each step
    ~15x slower than 256-d and, at the recipe's lr, unstable; the PCA travels with the method.
    sample_rows: rows (a keyed sample) the PCA and the warm start are fitted on; the training
    itself sees every row.
    With `model.neighbor_view` = k > 0 the sample is also a bank: each training row is given its
    k nearest sampled rows as it is read (`BankNeighbors`), the bank travels to the workers once
    (Ray Train context), and the student is conditioned on one of them while the teacher sees the
    row (the neighbour pairs of TEMI and SCAN: what UMAP's k-NN graph knows, given to the model).
    """

    name = "cludi"
    model_factory = "raycluster.methods.cludi.model.build_cludi"
    model_config_class = "raycluster.methods.cludi.model.CludiConfig"

    def __init__(self, n_clusters: int, model: Optional[dict] = None, optim: Optional[dict] = None,
                 train: Optional[dict] = None, use_gpu: bool = False, seed: int = 0,
                 storage_path: str = "outputs/train", run_name: str = "cludi", max_failures: int = 0,
                 manifold: Optional[dict] = None, input_dim: Optional[int] = 256, sample_rows: int = 100_000):
        from raycluster.methods.start import check_manifold
        from raycluster.data.postprocess import Postprocess

        super().__init__(n_clusters, model, optim, train, use_gpu, seed, max_failures)
        self.manifold = check_manifold(manifold, "cludi")
        if input_dim is not None and input_dim < 2:
            raise ValueError(f"cludi: input_dim must be >= 2 or null, got {input_dim}")
        if sample_rows < n_clusters:
            raise ValueError(f"cludi: sample_rows must be >= n_clusters ({n_clusters}), got {sample_rows}")
        self.input_dim, self.projection, self.sample_rows = input_dim, Postprocess(), sample_rows
        self.neighbors = None   # BankNeighbors over the sampled rows, with `model.neighbor_view`
        self.storage_path, self.run_name = storage_path, run_name

    def model_config(self, feature_dim: int) -> dict:
        return {**self.model_overrides, "n_clusters": self.n_clusters, "feature_dim": feature_dim}

    def fit(self, vectors: np.ndarray, labels: Optional[np.ndarray] = None) -> "CLUDI":
        from raycluster.data.rows import ArrayRows

        return self.fit_rows(ArrayRows(self.check_input(vectors), labels), with_labels=labels is not None)

    def fit_rows(self, rows, with_labels: bool = False) -> "CLUDI":
        """Fit on a StoreRows (or ArrayRows) without holding every row: the input PCA and the
        warm start are fitted on a sample (at most `sample_rows`), and the Ray Train workers read
        the rows themselves, projected and given their warm-start cluster as they are read."""
        from raycluster.data.postprocess import Postprocess
        from raycluster.methods.cludi.model import build_cludi
        from raycluster.neighbors.manifold import BankNeighbors
        from raycluster.train.run import fit_with_ray_train

        if rows.n_rows < self.n_clusters:
            raise ValueError(f"{self.name}: k={self.n_clusters} clusters is more than the {rows.n_rows} samples")
        sample = rows.sample(self.sample_rows, self.seed)
        if self.input_dim and rows.dim > self.input_dim:
            self.projection = Postprocess.fit(sample.vectors, min(self.input_dim, len(sample.vectors)), False, self.seed)
        features = self.projection(sample.vectors)
        config = self.model_config(features.shape[1])
        arguments, context = {"projection": self.projection}, None
        if config.get("warm_start_epochs"):
            arguments["starter"] = self.warm_start(features, sample.labels if with_labels else None)
        if config.get("neighbor_view"):   # the student's view: a neighbour among the sampled rows
            self.neighbors = BankNeighbors(features, min(config["neighbor_view"], len(features) - 1))
            arguments["neighbors"], context = self.neighbors, {"bank": self.neighbors.bank}
        state = fit_with_ray_train(build_cludi, config, rows.training_data(training_columns, arguments), self.optim,
                                   self.train, self.use_gpu, self.storage_path, self.run_name, self.seed,
                                   max_failures=self.max_failures, context=context, reuse=self.reuse)
        return self._restore(state)

    def warm_start(self, features: np.ndarray, labels: Optional[np.ndarray] = None):
        """The warm start's teacher, fitted label-free on (n, F) sampled features (labels only
        score it): spherical k-means, or with `manifold` k-means on their UMAP embedding; its
        `predict` gives every training row its starting cluster as the workers read it."""
        from raycluster.data.store import unit_rows
        from raycluster.methods.kmeans.method import FaissKMeans
        from raycluster.methods.kmeans.umap import UMAPKMeans
        from raycluster.metrics import size_entropy, supervised_metrics

        unit = unit_rows(features)   # the denoiser sees normalised features too
        starter = (UMAPKMeans(self.n_clusters, seed=self.seed, **self.manifold) if self.manifold is not None
                   else FaissKMeans(self.n_clusters, n_init=3, seed=self.seed)).fit(unit)
        start = starter.fitted_clusters if self.manifold is not None else starter.predict(unit)[0]
        # the sizes training should keep: the pipeline warns when the fitted clusters are much less even
        self.stages["start_size_entropy"] = size_entropy(start[start >= 0], self.n_clusters)
        if labels is not None and (labels >= 0).all():
            self.stages["warm_start"] = supervised_metrics(labels, starter.predict(unit)[0])
            log.warning("CLUDI warm start (%d sampled rows): %s", len(unit), self.stages["warm_start"])
        return starter

    def predict(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        torch.manual_seed(self.seed)   # the DDIM draws are random: same seed, same assignments
        if self.projection.components is not None:
            vectors = self._project(vectors)
        if self.neighbors is None:
            return self._predict_with_model(vectors)
        # the draws go round the row and its nearest training rows, as the model was trained
        around = torch.from_numpy(self.neighbors.bank[self.neighbors(vectors)])    # (n, k, F)
        return self._predict_with_model(vectors, neighbor_features=around)

    def _project(self, vectors: np.ndarray) -> np.ndarray:
        from raycluster.data.store import EmbeddingWidthError

        if vectors.shape[1] != self.projection.mean.shape[0]:
            raise EmbeddingWidthError(f"cludi: embeddings have width {vectors.shape[1]}, the method was fitted on "
                                      f"{self.projection.mean.shape[0]}")
        return self.projection(vectors)

    def fitted_state(self) -> tuple[dict, dict]:
        arrays, values = super().fitted_state()
        if self.projection.components is not None:
            arrays.update(input_mean=self.projection.mean, input_components=self.projection.components)
        if self.neighbors is not None:
            arrays["neighbor_bank"] = self.neighbors.bank
            values["neighbor_view"] = self.neighbors.k
        return arrays, values

    def restore_fitted(self, arrays: dict, values: dict) -> "CLUDI":
        from raycluster.data.postprocess import Postprocess
        from raycluster.neighbors.manifold import BankNeighbors

        arrays, values = dict(arrays), dict(values)
        if "input_components" in arrays:
            self.projection = Postprocess(False, arrays.pop("input_mean"), arrays.pop("input_components"))
        if "neighbor_bank" in arrays:
            self.neighbors = BankNeighbors(arrays.pop("neighbor_bank"), values.pop("neighbor_view"))
        return super().restore_fitted(arrays, values)

    def check_search_settings(self, tune) -> None:
        from raycluster.methods.cludi.model import CludiConfig

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


def training_columns(keys: np.ndarray, vectors: np.ndarray, projection, starter=None, neighbors=None) -> dict:
    """A batch of rows (n, D) -> CLUDI's training columns: `features` (n, F) float32 after the
    input PCA; with a warm start, `initial_clusters` (n,) int64 from the fitted starter; with a
    neighbour view, `neighbors` (n, k) int64, the rows' nearest sampled rows (a BankNeighbors)."""
    from raycluster.data.store import unit_rows

    features = projection(vectors)
    columns = {"features": features}
    if starter is not None:
        columns["initial_clusters"] = starter.predict(unit_rows(features))[0]
    if neighbors is not None:
        columns["neighbors"] = neighbors(features)
    return columns
