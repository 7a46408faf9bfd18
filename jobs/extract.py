"""Extraction only: shards -> Ray Data actor pool -> Parquet embedding store (resumable).

    python jobs/extract.py data=mnist backbone=pixels
    python jobs/extract.py data=shards data.shards='s3://b/shards-{000000..000127}.tar' backbone=vit_small cluster=gpu_node
"""
from raycluster.cli import hydra_job
from raycluster.features.extract import run_extraction
from raycluster.pipeline import ensure_shards
from raycluster.ray_utils import ensure_ray


def extract(cfg):
    ensure_shards(cfg.data)
    ensure_ray(cfg.cluster.address, cfg.cluster.num_cpus)
    summary = run_extraction(cfg.data, cfg.backbone, cfg.cluster, cfg.embeddings_path)
    print(f"embedded {summary.samples} samples ({summary.corrupt} corrupt skipped) from "
          f"{summary.shards_written} shards ({summary.shards_skipped} reused) in {summary.seconds:.1f}s "
          f"-> {summary.store}\nweights: {summary.weights}")
    return summary


main = hydra_job(extract)

if __name__ == "__main__":
    main()
