"""`jobs/pretrain_diffusion.py`: a method's pretraining stage alone."""
from __future__ import annotations

from raycluster.app.pipeline import ensure_embeddings, open_rows

from raycluster.methods.base import ClusteringMethod
from raycluster.errors import ConfigError
from raycluster.methods.base import Pretrainable


def run_pretrain_diffusion(cfg) -> dict:
    """`jobs/pretrain_diffusion.py`: shards -> pixel rows (cached store) -> the configured method's
    pretraining stage alone (`raycluster.methods.base.Pretrainable`; DiEC: a UNet in
    `<method.work_dir>/pretrained`, which its fit reuses). cfg: RunConfig with backbone=pixels."""
    method = ClusteringMethod.from_config(cfg.method, cfg.reuse)
    if not isinstance(method, Pretrainable):
        raise ConfigError(f"method {method.name!r} has no pretraining stage: use method=diec (or experiment=diec_mnist)")
    ensure_embeddings(cfg)
    rows = open_rows(cfg).load()
    summary = {**method.pretrain_stage(rows.vectors), "samples": int(len(rows.keys)), "data": cfg.data.name}
    print("\n".join(["pretrain summary"] + [f"  {k}: {v}" for k, v in summary.items()]))
    return summary
