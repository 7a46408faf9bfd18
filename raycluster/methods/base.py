"""The interface every clustering method implements, so jobs and benchmarks treat them alike.

    method = ClusteringMethod.from_config(cfg.method)   # _target_ + constructor settings
    method.fit(vectors, labels=None)               # (N, D) float32; labels only for logged metrics
    cluster, confidence = method.predict(vectors)  # (N,) int64 in [0, K), (N,) float32 in [0, 1]

Methods that train on Ray (Ray Train) do so inside `fit`; their constructor takes the resources
they need from config. `fit` may log metrics against labels when given, but its result must
not depend on them (no selection, no early stopping on labels).
"""
from __future__ import annotations

import logging
from typing import Optional, Protocol, runtime_checkable

import numpy as np

from raycluster.errors import ConfigError

PACKAGE = "raycluster.methods."
log = logging.getLogger(__name__)


def method_class(target: str) -> type:
    """The ClusteringMethod class `target` ("raycluster.methods.<...>.<Class>") names, checked
    before anything outside raycluster.methods is imported; ConfigError for anything else."""
    import importlib

    module, _, name = target.rpartition(".")
    if not module.startswith(PACKAGE) or not name.isidentifier() or not module.replace(".", "").replace("_", "").isalnum():
        raise ConfigError(f"method class {target!r} is not in {PACKAGE.rstrip('.')}")
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, ClusteringMethod)):
        raise ConfigError(f"method class {target!r} is not a raycluster clustering method")
    return cls


class ClusteringMethod:
    name: str = "base"
    # How cached stages (checkpoints, pretrained parts) are treated when their inputs changed:
    # "auto" rebuilds them, "strict" raises (raycluster.fingerprint). Set from the run's `reuse`.
    reuse: str = "auto"
    # Rows the default `fit_rows` trains on: a keyed sample when the store holds more; None: every row.
    train_rows: Optional[int] = None

    def __init__(self, n_clusters: int):
        if n_clusters < 2:
            raise ValueError(f"n_clusters must be >= 2, got {n_clusters}")
        self.n_clusters = n_clusters

    @staticmethod
    def from_config(settings, reuse: str = "auto") -> "ClusteringMethod":
        """The method `settings` describe ({"_target_": class path, **constructor settings}), the one
        way every job and bench builds one. Every setting is checked here, before shards, Ray or
        extraction: a class outside raycluster.methods, a nested `_target_`, an unknown key or a bad
        value is one ConfigError naming the method."""
        from omegaconf import DictConfig, OmegaConf

        if isinstance(settings, DictConfig):
            settings = OmegaConf.to_container(settings, resolve=True)
        if not isinstance(settings, dict) or not isinstance(settings.get("_target_"), str):
            raise ConfigError("method config has no _target_")
        cls = method_class(settings["_target_"])
        kwargs = {key: value for key, value in settings.items() if not key.startswith("_")}
        nested = [key for key, value in kwargs.items() if isinstance(value, dict) and "_target_" in value]
        if nested:
            raise ConfigError(f"method {cls.__name__}: settings {nested} name a class to build; not allowed")
        try:
            method = cls(**kwargs)
        except (TypeError, ValueError) as err:   # unknown keyword, bad value: the message names it
            raise ConfigError(f"method {cls.__name__}: {err}") from None
        method.reuse = reuse
        return method

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

    def fit_rows(self, rows, with_labels: bool = False) -> "ClusteringMethod":
        """Fit on a `raycluster.data.rows.StoreRows`. This default reads the rows into the process
        it runs in (`raycluster.app.fitting` runs it in a Ray task, not the driver): every row, or
        a keyed sample of `train_rows` when the store holds more, so that process holds at most
        train_rows x D whatever N is; every row is then assigned by the streamed predict pass.
        Methods that stream their training override it (k-means: a sample, then Lloyd passes;
        CLUDI: Ray Train workers read the store). with_labels: pass known labels to `fit` for its
        logged metrics."""
        if self.train_rows is not None and rows.n_rows > self.train_rows:
            log.info("%s: training on a sample of %d of the %d rows (method.train_rows)", self.name, self.train_rows,
                     rows.n_rows)
            data = rows.sample(self.train_rows)
        else:
            data = rows.load()
        return self.fit(data.vectors, data.labels if with_labels and data.has_labels else None)

    def fit_resources(self) -> dict:
        """Ray resources of the task that runs `fit_rows`."""
        return {"num_cpus": 1}

    def fitted_state(self) -> tuple[dict, dict]:
        """What `fit` learnt: ({name: numpy array}, {name: JSON value}); `restore_fitted` takes
        it back (raycluster.methods.saving writes it without pickle)."""
        raise NotImplementedError(f"{self.name} cannot be saved")

    def restore_fitted(self, arrays: dict, values: dict) -> "ClusteringMethod":
        raise NotImplementedError(f"{self.name} cannot be loaded")


class TorchMethod(ClusteringMethod):
    """A method whose model is a torch module, built from a plain config dict by the function
    named in `model_factory` (so Ray Train workers and checkpoints rebuild it the same way).
    The module has `config.feature_dim` and `predict(features) -> (cluster, confidence)`."""

    model_factory: str = ""        # "package.module.function"
    model_config_class: str = ""   # "package.module.Dataclass": the settings `method.model` may override
    model = None

    def __init__(self, n_clusters: int, model: Optional[dict] = None, optim: Optional[dict] = None,
                 train: Optional[dict] = None, use_gpu: bool = False, seed: int = 0, max_failures: int = 0):
        """The settings every torch method shares: `model` (overrides of the model config,
        checked), `optim` (`train.loop.OptimConfig`), `train` (`config.TrainConfig`: Ray Train
        workers, CPUs, checkpoints), `use_gpu`, `seed`, `max_failures` (Ray Train retries)."""
        from raycluster.config import TrainConfig
        from raycluster.train.loop import OptimConfig

        super().__init__(n_clusters)
        self.model_overrides = self.checked_overrides(model)
        self.optim = OptimConfig(**(optim or {}))
        self.train = TrainConfig(**(train or {}))
        self.use_gpu, self.seed, self.max_failures = use_gpu, seed, max_failures
        self.stages: dict = {}
        self.model = None

    def checked_overrides(self, model: Optional[dict]) -> dict:
        """`method.model` as a dict; a key the model's config does not have is one clear error
        here, when the method is built, not after hours of extraction or pretraining."""
        from hydra.utils import get_class

        from raycluster.config import check_keys

        return check_keys(get_class(self.model_config_class), model or {}, f"{self.name} method.model")

    def fit_resources(self) -> dict:
        # The work runs in Ray Train / Tune workers with their own resources; the task that
        # drives them must not hold a CPU they need.
        return {"num_cpus": 0}

    def _restore(self, state: dict) -> "TorchMethod":
        """Rebuild the model from a {"model_config", "model"} state (a checkpoint or a saved file)."""
        from hydra.utils import get_method

        self.model_config_used = dict(state["model_config"])
        self.model = get_method(self.model_factory)(self.model_config_used)
        self.model.load_state_dict(state["model"])
        self.model.eval()
        return self

    def __getstate__(self):
        """Ray moves fitted methods between processes by pickling them; a torch module travels as
        its config and state dict (parametrized modules, e.g. TEMI's weight norm, refuse pickle)."""
        state = dict(self.__dict__)
        if state.get("model") is not None:
            state["model"] = {"model_config": self.model_config_used, "model": self.model.state_dict()}
        return state

    def __setstate__(self, state):
        model = state.get("model")
        self.__dict__.update({**state, "model": None})
        if isinstance(model, dict):
            self._restore(model)

    def portable_model_config(self) -> dict:
        """The model config to save: what rebuilds the module without the files it was trained
        from (a method replaces paths whose content the weights already hold)."""
        return self.model_config_used

    def fitted_state(self) -> tuple[dict, dict]:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit() before saving")
        arrays = {f"model.{name}": tensor.detach().cpu().numpy() for name, tensor in self.model.state_dict().items()}
        return arrays, {"model_config": self.portable_model_config()}

    def restore_fitted(self, arrays: dict, values: dict) -> "TorchMethod":
        import torch

        state = {name[len("model."):]: torch.from_numpy(array) for name, array in arrays.items()}
        return self._restore({"model_config": values["model_config"], "model": state})

    def _predict_with_model(self, vectors: np.ndarray, **model_inputs) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) -> the model's (cluster int64, confidence float32), after checking the width;
        `model_inputs` go to the model's predict as they are (CLUDI's neighbour views)."""
        import torch

        from raycluster.errors import EmbeddingWidthError
        from raycluster.train.loop import shared_tensor

        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit() (or load()) before predict()")
        expected = self.model.config.feature_dim
        if vectors.shape[1] != expected:
            raise EmbeddingWidthError(f"{self.name}: embeddings have width {vectors.shape[1]}, the model expects "
                                      f"{expected}")
        rows = shared_tensor(np.ascontiguousarray(vectors, np.float32), torch.float32)   # read, never written
        cluster, confidence = self.model.predict(rows, **model_inputs)
        return cluster.numpy().astype(np.int64), confidence.numpy()


@runtime_checkable
class Searchable(Protocol):
    """A method with a label-free search of its own settings (`jobs/tune.py`)."""

    def check_search_settings(self, tune) -> None:
        """One clear error for bad search settings, before any work."""

    def label_free_search(self, vectors: np.ndarray, labels: Optional[np.ndarray], tune, output_dir: str) -> dict:
        """Search on (N, D) float32 rows (labels: logged only), `tune` the run's SearchConfig;
        writes its results under output_dir and returns a summary dict."""


@runtime_checkable
class Pretrainable(Protocol):
    """A method with a pretraining stage that can run alone (`jobs/pretrain_diffusion.py`)."""

    def pretrain_stage(self, vectors: np.ndarray) -> dict:
        """Run (or reuse, when its inputs are unchanged) the stage; returns a summary dict."""
