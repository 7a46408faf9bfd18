"""Typed schemas for the config groups; jobs turn Hydra's DictConfig into these.

Nothing below `jobs/` reads a raw DictConfig: `RunConfig.from_hydra(cfg)` validates types and
rejects unknown keys (a typo in a YAML file or an override is one clear error), and the
library works on plain dataclasses. Objects with a `_target_` (extractors, methods) stay dicts
and are built with `hydra.utils.instantiate` / `get_class` where they are used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf

from raycluster.errors import ConfigError
from raycluster.neighbors.index import IndexSpec


# `${ifnull:${data.source.classes},202}`: a config value that falls back when another is null.
if not OmegaConf.has_resolver("ifnull"):
    OmegaConf.register_new_resolver("ifnull", lambda value, default: default if value is None else value)


@dataclass
class SourceConfig:
    """Where shards are built from when they do not exist yet (jobs/make_shards.py)."""

    kind: str = "digits"          # digits | mnist | folder | procedural
    path: Optional[str] = None    # MNIST IDX folder or image root (class sub-folders optional)
    classes: Optional[int] = None  # folder: keep the first N class folders (sorted)
    limit: Optional[int] = None   # keep at most this many samples (smoke tests)


@dataclass
class DataConfig:
    name: str = "digits"
    # A directory of *.tar, a brace pattern ("shards-{000000..000127}.tar"), or a list of paths;
    # local paths or any fsspec URL.
    shards: Any = "outputs/cache/shards/digits"
    source: Optional[SourceConfig] = None   # null: the shards must already exist
    samples_per_shard: int = 1000
    num_clusters: int = 10

    def __post_init__(self):
        if self.num_clusters < 2:
            raise ConfigError(f"data.num_clusters must be >= 2, got {self.num_clusters}")
        if self.samples_per_shard < 1:
            raise ConfigError(f"data.samples_per_shard must be >= 1, got {self.samples_per_shard}")


@dataclass
class BackboneConfig:
    name: str = "pixels"
    extractor: dict = field(default_factory=dict)  # {_target_: raycluster.features..., kwargs}
    pca_dim: Optional[int] = None   # PCA on the embedding store before clustering
    whiten: bool = False            # scale each PCA component to unit variance (needs pca_dim)
    l2_normalize: bool = False      # unit-norm embeddings before clustering
    dtype: str = "float32"          # stored embedding dtype: float32 | float16

    def __post_init__(self):
        if self.whiten and not self.pca_dim:
            raise ValueError("backbone.whiten needs backbone.pca_dim (the components to whiten)")


@dataclass
class ExtractConfig:
    batch_size: int = 64
    concurrency: int = 1                       # extractor actors in the pool (the maximum if autoscaling)
    min_concurrency: Optional[int] = None      # set: an autoscaling pool of min..concurrency actors,
                                               # which also shrinks instead of waiting when a node is lost
    num_cpus_per_actor: Optional[float] = None  # null: sized so the job's other tasks keep a CPU
    num_gpus_per_actor: float = 0.0
    decode_threads: Optional[int] = None      # threads decoding ahead of the model in each actor;
                                               # null: the actor's CPUs on a GPU, none on a CPU (features/extract.py)
    autocast: Optional[str] = None             # bfloat16 | float16 (GPU)
    torch_threads: Optional[int] = None        # intra-op threads per actor; null: its CPU share
    cpu_forward_rows: int = 16                 # rows per forward pass on a CPU actor (features/extract.py)

    def __post_init__(self):
        if self.cpu_forward_rows < 1:
            raise ValueError(f"cluster.extract.cpu_forward_rows must be >= 1, got {self.cpu_forward_rows}")
        if self.decode_threads is not None and self.decode_threads < 0:
            raise ValueError(f"cluster.extract.decode_threads must be >= 0 or null, got {self.decode_threads}")


@dataclass
class TrainConfig:
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


@dataclass
class StreamConfig:
    """How the stages after extraction read the store (raycluster.data.rows, raycluster.assign)."""

    local_bytes: int = 268435456     # stores up to this size (256 MiB) stream in the driver process;
                                     # larger ones through Ray Data tasks and actor pools
    batch_rows: int = 16384          # rows per streamed batch
    predict_concurrency: int = 1     # assignment actors (the maximum of the pool)
    predict_num_cpus: float = 1.0
    predict_num_gpus: float = 0.0
    sample_rows: int = 20000         # rows read whole for label-free metrics and the report


@dataclass
class ClusterConfig:
    address: Optional[str] = None   # null: start local Ray; "auto" / "ray://host:10001": connect
    num_cpus: Optional[int] = None  # local Ray only; null: every core
    use_gpu: bool = False
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)


@dataclass
class NeighborsConfig:
    """k-NN graph (jobs/neighbors.py) and neighbour-based methods: a sharded FAISS index."""

    name: str = "ivf_flat"
    index: IndexSpec = field(default_factory=IndexSpec)
    shards: int = 1                    # index shards, one Ray actor each
    k: int = 10                        # neighbours per point in the graph
    normalize: bool = True             # unit-norm vectors and queries (cosine with metric=ip)
    query_batch: int = 4096            # rows per Ray Data search batch
    searchers: int = 1                 # Ray Data searcher actors (they call the shards)
    cpus_per_shard: Optional[float] = None   # null: what fits beside one read task and the searchers
    gpus_per_shard: float = 0.0
    index_dir: Optional[str] = None    # null: <output_dir>/index; an index already there is reused
    graph_dir: Optional[str] = None    # null: <output_dir>/knn_graph


@dataclass
class SearchConfig:
    """jobs/tune.py for methods with searchable model hyperparameters (CLUDI): ASHA over `space`,
    chosen by a label-free criterion (raycluster/tune/asha.py says which and why)."""

    name: str = "asha"
    space: dict = field(default_factory=dict)   # {model hyperparameter: [values]}, sampled uniformly
    num_samples: int = 8
    epochs: Optional[int] = None        # per trial at most; null: method.optim.epochs
    grace_period: int = 5               # epochs before ASHA's first cut
    reduction_factor: int = 2
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: dict = field(default_factory=dict)    # {_target_: raycluster.methods..., kwargs}
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    neighbors: NeighborsConfig = field(default_factory=NeighborsConfig)
    tune: SearchConfig = field(default_factory=SearchConfig)
    seed: int = 0
    output_dir: str = "outputs/runs/default"
    cache_dir: str = "outputs/cache"
    embeddings_dir: Optional[str] = None  # null: <cache_dir>/embeddings/<data>-<backbone>
    report: bool = True   # write <output_dir>/report/ (raycluster.report)
    # Cached shards, embeddings and method stages are reused only when what made them is
    # unchanged (raycluster.fingerprint). auto: otherwise rebuild them; strict: otherwise stop.
    reuse: str = "auto"

    def __post_init__(self):
        if self.reuse not in ("auto", "strict"):
            raise ConfigError(f"reuse={self.reuse!r}: expected auto or strict")

    @property
    def embeddings_path(self) -> str:
        return self.embeddings_dir or f"{self.cache_dir}/embeddings/{self.data.name}-{self.backbone.name}"

    @classmethod
    def from_hydra(cls, cfg: DictConfig) -> "RunConfig":
        """Validate a composed Hydra config against this schema (unknown keys are errors)."""
        node = OmegaConf.to_container(cfg, resolve=True)
        node.pop("hydra", None)
        node.pop("experiment", None)
        return typed(cls, node)


CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def check_keys(schema: type, values: dict, what: str) -> dict:
    """`values` as a dict, or one ValueError naming every key the dataclass `schema` does not
    have (a typo in a method's settings fails when it is built, not hours later)."""
    known = set(schema.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{what}: unknown setting(s) {unknown}; known: {sorted(known)}")
    return dict(values)


def compose(overrides: Sequence[str] = ()) -> "RunConfig":
    """The project's config composed as `jobs/train.py <overrides>` would see it (for benches,
    notebooks and tests, which do not go through @hydra.main)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return RunConfig.from_hydra(hydra_compose("config", overrides=list(overrides)))


def typed(schema: type, node: Any):
    """Merge `node` onto `schema`'s structured config and return the dataclass instance."""
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except Exception as err:  # omegaconf raises several types; one readable message for all
        raise ConfigError(f"invalid config for {schema.__name__}: {err}") from None
