"""Near-duplicate removal over a run's store, searched within its level-1 clusters (NeMo Curator's route).

    python jobs/dedup.py run_dir=outputs/runs/<run> threshold=0.25 keep=central probes=2
Writes <run_dir>/dedup/: kept.parquet and removed.parquet (key, cluster, group), summary.json
(groups, removed share), index.html (a few duplicate groups as thumbnail rows).
"""
import hydra

from raycluster.app.cli import run_or_exit, setup_logging
from raycluster.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="dedup")
def main(cfg):
    from raycluster.curation.dedup import DedupConfig
    from raycluster.app.curation import run_dedup

    setup_logging()
    config = run_or_exit(lambda: DedupConfig(
        threshold=float(cfg.threshold), keep=cfg.keep, probes=int(cfg.probes), background_rank=int(cfg.background_rank),
        same_image=float(cfg.same_image), whiten=float(cfg.whiten), use_gpu=bool(cfg.use_gpu)))
    run_or_exit(run_dedup, cfg.run_dir, config, cfg.output_dir)


if __name__ == "__main__":
    main()
