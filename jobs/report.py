"""Build (or rebuild) the static HTML cluster report of a finished run.

    python jobs/report.py run_dir=outputs/runs/digits-pixels-20261123-101500
    python jobs/report.py run_dir=DIR map_method=pca central=12
Writes DIR/report/index.html with its assets; open it from disk in any browser.
"""
import logging

import hydra

from raycluster.app.cli import run_or_exit, setup_logging
from raycluster.config import CONFIG_DIR, typed
from raycluster.report import ReportOptions, report_run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="report")
def main(cfg):
    from omegaconf import OmegaConf

    setup_logging()
    node = OmegaConf.to_container(cfg, resolve=True)
    node.pop("hydra", None)
    run_dir = node.pop("run_dir")
    options = run_or_exit(typed, ReportOptions, node)
    info = run_or_exit(report_run, run_dir, options)
    logging.getLogger("raycluster").info(
        "report written: %s\n  %d thumbnails from %d shard(s), map: %s of %d points, %.1f MB, %.1fs",
        info["path"], info["thumbnails"], info["shards_read"], info["map_method"], info["map_points"],
        info["bytes"] / 1e6, info["seconds"])


if __name__ == "__main__":
    main()
