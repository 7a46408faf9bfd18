"""Pick M keys spread evenly over a run's clusters, recursively down its hierarchy (Vo et al.).

    python jobs/train.py method=hkmeans method.levels='[1000,100,10]' ...    # a hierarchical run
    python jobs/curate.py run_dir=outputs/runs/<run> size=100000 within_leaf=closest
Writes <run_dir>/curated.parquet: key, cluster (level 1), cluster_l<i> per level, confidence.
"""
import hydra

from raycluster.app.cli import run_or_exit, setup_logging
from raycluster.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="curate")
def main(cfg):
    from raycluster.app.curation import run_curate
    from raycluster.curation.sampling import SamplingConfig

    setup_logging()
    config = run_or_exit(lambda: SamplingConfig(int(cfg.size), cfg.within_leaf, int(cfg.seed)))
    run_or_exit(run_curate, cfg.run_dir, config, cfg.output)


if __name__ == "__main__":
    main()
