"""Main job: shards -> embeddings -> clusters -> assignments, metrics and a summary.

    python jobs/train.py                                   # embedded default: digits, pixels, k-means
    python jobs/train.py data=mnist method=kmeans
    python jobs/train.py data=folder data.source.path=/photos data.num_clusters=20 backbone=vit_small
    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/train.py cluster=gpu_node ...
"""
import hydra
from omegaconf import DictConfig

from raycluster.cli import run_or_exit, setup_logging
from raycluster.config import RunConfig
from raycluster.pipeline import run_train


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> dict:
    setup_logging()
    return run_or_exit(lambda: run_train(run_or_exit(RunConfig.from_hydra, cfg)))


if __name__ == "__main__":
    main()
