"""Write WebDataset shards from a sample source (digits, MNIST IDX, image folder).

    python jobs/make_shards.py data=mnist
    python jobs/make_shards.py data=folder data.source.path=/photos data.shards=s3://bucket/photos data.samples_per_shard=2000
"""
from dataclasses import asdict

import hydra
from omegaconf import DictConfig

from raycluster.cli import run_or_exit, setup_logging
from raycluster.config import RunConfig
from raycluster.data.builtin import samples_from_source
from raycluster.data.shards import write_shards


def make_shards(cfg: RunConfig) -> dict:
    source = cfg.data.source
    if source is None:
        raise ValueError(f"data={cfg.data.name} has no source to build shards from")
    manifest = write_shards(samples_from_source(source.kind, source.path, source.classes, source.limit),
                            cfg.data.shards, cfg.data.samples_per_shard, source=asdict(source))
    print(f"wrote {manifest['num_samples']} samples in {len(manifest['shards'])} shards to {cfg.data.shards}")
    return manifest


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig):
    setup_logging()
    return run_or_exit(lambda: make_shards(run_or_exit(RunConfig.from_hydra, cfg)))


if __name__ == "__main__":
    main()
