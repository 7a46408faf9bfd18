"""Extraction only: shards -> Ray Data actor pool -> Parquet embedding store (resumable).

    python jobs/extract.py data=mnist backbone=pixels
    python jobs/extract.py data=shards data.shards='s3://b/shards-{000000..000127}.tar' backbone=vit_small cluster=gpu_node
"""
import hydra
from omegaconf import DictConfig

from raycluster.cli import run_or_exit, setup_logging
from raycluster.config import RunConfig
from raycluster.features.extract import run_extraction
from raycluster.pipeline import ensure_shards
from raycluster.ray_utils import ensure_ray


def extract(cfg: RunConfig):
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus)
    ensure_shards(cfg.data)
    summary = run_extraction(cfg.data, cfg.backbone, cfg.cluster, cfg.embeddings_path)
    print(f"embedded {summary.samples} samples ({summary.corrupt} corrupt skipped) from "
          f"{summary.shards_written} shards ({summary.shards_skipped} reused) in {summary.seconds:.1f}s "
          f"-> {summary.store}\nweights: {summary.weights}")
    return summary


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig):
    setup_logging()
    return run_or_exit(lambda: extract(run_or_exit(RunConfig.from_hydra, cfg)))


if __name__ == "__main__":
    main()
