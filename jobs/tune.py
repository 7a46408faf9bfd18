"""Label-free hyperparameter search with Ray Tune for the configured method.

    python jobs/pretrain_diffusion.py experiment=diec_mnist output_dir=outputs/diec_mnist
    python jobs/tune.py experiment=diec_mnist output_dir=outputs/diec_mnist      # DiEC's COL/COT search
    python jobs/train.py experiment=diec_mnist output_dir=outputs/diec_mnist     # reuses both
DiEC: a grid over method.search.layers x method.search.timesteps, each trial scored by
method.search.criterion (silhouette, or chi: Calinski-Harabasz) of k-means on a subset; heatmaps (criterion, and ACC when labels
exist: logged, never used) and search.json under <output_dir>/diec/search/.
"""
from raycluster.app.cli import hydra_job
from raycluster.app.tune import run_tune

main = hydra_job(run_tune)

if __name__ == "__main__":
    main()
