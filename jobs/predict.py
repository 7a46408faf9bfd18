"""Assign clusters to every row of an embedding store with a trained run's method, as a Ray Data
actor pool.

    python jobs/predict.py run_dir=outputs/runs/digits-pixels-20261123-101500
    python jobs/predict.py run_dir=DIR embeddings_dir=outputs/cache/embeddings/new-photos-effnet_lite0
Writes <run_dir>/predictions.parquet (key, cluster, confidence) unless output= is given.
"""
import hydra

from raycluster.app.cli import run_or_exit, setup_logging
from raycluster.config import CONFIG_DIR
from raycluster.app.predict import run_predict


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg):
    setup_logging()
    run_or_exit(run_predict, cfg.run_dir, cfg.embeddings_dir, cfg.output, cfg.batch_size, cfg.concurrency)


if __name__ == "__main__":
    main()
