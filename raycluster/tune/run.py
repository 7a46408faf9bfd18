"""`jobs/tune.py`: the configured method's label-free search on Ray Tune.

- DiEC (`method=diec`, `experiment=diec_mnist`): the (layer, timestep) grid of
  `raycluster.tune.layer_timestep`, chosen by `method.search.criterion` (silhouette by
  default, or chi); writes `<method.work_dir>/search/` (search.json, heatmap_<criterion>.png,
  heatmap_acc.png when labelled),
  which a later `jobs/train.py` with the same output_dir reuses.
- CLUDI (`method=cludi`): ASHA over `tune.space` (`raycluster.tune.asha`), chosen by the
  silhouette criterion; writes `<output_dir>/tune/search.json` with every trial and how the
  label-free choice agrees with the best trial by ACC (when the data have labels).
"""
from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)


def run_tune(cfg) -> dict:
    from raycluster.data.store import EmbeddingStore
    from raycluster.pipeline import build_method, ensure_embeddings

    method = build_method(cfg.method, cfg.reuse)
    if method.name == "cludi":
        return run_asha(cfg, method)
    if method.name != "diec":
        raise ValueError(f"jobs/tune.py has no search for method {method.name!r} (it has: diec, cludi)")
    start = time.time()
    ensure_embeddings(cfg)
    embeddings = EmbeddingStore(cfg.embeddings_path).load()
    unet = method.unet   # a folder or hub name given by the user: loading errors name it
    if unet is None:
        unet = os.path.join(method.work_dir, "pretrained")
        if not os.path.exists(os.path.join(unet, "unet", "config.json")):
            raise FileNotFoundError(f"no pretrained UNet in {unet}: run jobs/pretrain_diffusion.py with the same "
                                    "overrides first, or pass method.unet=<diffusers folder or hub name>")
    saved = os.path.join(method.work_dir, "search", "search.json")
    if os.path.exists(saved):
        os.remove(saved)   # this job always searches; train reuses its result
    method.layer = method.timestep = None
    layer, timestep = method.layer_and_timestep(embeddings.vectors, unet,
                                                embeddings.labels if embeddings.has_labels else None)
    found = method.stages["search"]
    summary = {"layer": layer, "timestep": timestep, "criterion": "calinski_harabasz",
               "best_by_acc": found["best_by_acc"], "heatmaps": found["heatmaps"], "search": saved,
               "seconds": round(time.time() - start, 1)}
    print("\n".join(["tune summary"] + [f"  {k}: {v}" for k, v in summary.items()]))
    return summary


def run_asha(cfg, method) -> dict:
    """CLUDI's hyperparameters by ASHA on the store's embeddings (postprocessed as for training)."""
    from dataclasses import asdict

    from raycluster.pipeline import ensure_embeddings, open_rows
    from raycluster.tune.asha import asha_search

    from raycluster.methods.cludi import CludiConfig

    unknown = sorted(set(cfg.tune.space) - set(CludiConfig.__dataclass_fields__))
    if unknown:   # before any work: a typo in the space is one line, not a failed trial later
        raise ValueError(f"tune.space names {unknown}, which are not {method.name} model hyperparameters")
    start = time.time()
    ensure_embeddings(cfg)
    embeddings = open_rows(cfg).load()   # the trials train on every row: O(N x D) here, as in each trial
    vectors = embeddings.vectors
    optim = asdict(method.optim)
    optim["epochs"] = cfg.tune.epochs or optim["epochs"]
    report = asha_search(vectors, method.model_factory, method.model_config(vectors.shape[1]), optim, cfg.tune.space,
                         os.path.join(cfg.output_dir, "tune"), embeddings.labels if embeddings.has_labels else None,
                         cfg.tune.num_samples, cfg.tune.grace_period, cfg.tune.reduction_factor,
                         cfg.tune.max_concurrent, cfg.tune.cpus_per_trial, cfg.seed)
    lines = ["tune summary", f"  trials {len(report['trials'])}  criterion {report['criterion']}  "
             f"{time.time() - start:.0f}s  -> {os.path.join(cfg.output_dir, 'tune', 'search.json')}"]
    for trial in sorted(report["trials"], key=lambda t: -t["silhouette"]):
        lines.append("  " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial.items()))
    lines.append(f"  chosen: {report['best']}")
    lines.append(f"  agreement with best-by-ACC: {report['agreement']}")
    print("\n".join(lines))
    return report

