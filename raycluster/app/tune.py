"""`jobs/tune.py`: the configured method's label-free search on Ray Tune.

The method says what its search is (`raycluster.methods.base.Searchable`):
- DiEC (`method=diec`, `experiment=diec_mnist`): the (layer, timestep) grid of
  `raycluster.tune.layer_timestep`, chosen by `method.search.criterion`; writes
  `<method.work_dir>/search/` (search.json, heatmaps), which a later `jobs/train.py` with the
  same output_dir reuses.
- CLUDI (`method=cludi`): ASHA over `tune.space` (`raycluster.tune.asha`), chosen by the
  silhouette criterion; writes `<output_dir>/tune/search.json` with every trial and how the
  label-free choice agrees with the best trial by ACC (when the data have labels).
"""
from __future__ import annotations

import logging
import os
import time

from raycluster.config import ConfigError

log = logging.getLogger(__name__)


def run_tune(cfg) -> dict:
    from raycluster.methods.base import Searchable
    from raycluster.app.pipeline import ensure_embeddings, open_rows
    from raycluster.methods.base import ClusteringMethod

    method = ClusteringMethod.from_config(cfg.method, cfg.reuse)
    if not isinstance(method, Searchable):
        raise ConfigError(f"method {method.name!r} has no label-free search for jobs/tune.py (diec and cludi have one)")
    method.check_search_settings(cfg.tune)
    start = time.time()
    ensure_embeddings(cfg)
    rows = open_rows(cfg).load()   # the search trains on every row: O(N x D) here, as in each trial
    report = method.label_free_search(rows.vectors, rows.labels if rows.has_labels else None, cfg.tune,
                                      os.path.join(cfg.output_dir, "tune"))
    lines = [f"tune summary ({method.name}, {time.time() - start:.0f}s)"]
    for trial in sorted(report.get("trials", []), key=lambda t: -t["silhouette"]):
        lines.append("  " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial.items()))
    lines += [f"  {k}: {v}" for k, v in report.items() if k != "trials"]
    print("\n".join(lines))
    return report
