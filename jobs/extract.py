"""Extraction only: shards -> Ray Data actor pool -> Parquet embedding store (resumable).

    python jobs/extract.py data=mnist backbone=pixels
    python jobs/extract.py data=shards data.shards='s3://b/shards-{000000..000127}.tar' backbone=vit_small cluster=gpu_node
"""
from raycluster.app.cli import hydra_job
from raycluster.app.pipeline import ensure_embeddings


def extract(cfg):
    _, summary = ensure_embeddings(cfg)
    print(f"embedded {summary.samples} samples ({summary.corrupt} corrupt skipped) from "
          f"{summary.shards_written} shards ({summary.shards_skipped} reused) in {summary.seconds:.1f}s "
          f"-> {summary.store}\nweights: {summary.weights}")
    return summary


main = hydra_job(extract)

if __name__ == "__main__":
    main()
