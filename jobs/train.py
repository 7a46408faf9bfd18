"""Main job: shards -> embeddings -> clusters -> assignments, metrics and a summary.

    python jobs/train.py                                   # embedded default: digits, pixels, k-means
    python jobs/train.py data=mnist method=cludi
    python jobs/train.py experiment=diec_mnist             # DiEC: pretrain UNet -> COL/COT search -> DEC
    python jobs/train.py data=folder data.source.path=/photos data.num_clusters=20 backbone=effnet_lite0
    RAY_AUTH_MODE=token ray job submit --working-dir . -- python jobs/train.py cluster=gpu_node ...
"""
from raycluster.app.cli import hydra_job
from raycluster.app.pipeline import run_train

main = hydra_job(run_train)

if __name__ == "__main__":
    main()
