"""Write WebDataset shards from a sample source (digits, MNIST IDX, image folder).

    python jobs/make_shards.py data=mnist
    python jobs/make_shards.py data=folder data.source.path=/photos data.shards=s3://bucket/photos data.samples_per_shard=2000
"""
from raycluster.app.cli import hydra_job
from raycluster.app.pipeline import ensure_shards


def make_shards(cfg):
    if cfg.data.source is None:
        raise ValueError(f"data={cfg.data.name} has no source to build shards from")
    built = ensure_shards(cfg.data)
    print(f"{'wrote' if built['built'] else 'found existing'} {built['samples']} samples in {built['shards']} shards "
          f"at {cfg.data.shards}")
    return built


main = hydra_job(make_shards)

if __name__ == "__main__":
    main()
