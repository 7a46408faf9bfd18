"""ASHA search over a Torch method's model hyperparameters, chosen by a label-free criterion.

Each trial trains the model in its own process with the Ray-free loop (`raycluster.train.loop`,
one trial per CPU; the data are embeddings, small next to a trial's compute) and reports after
every epoch; ASHA (`ray.tune.schedulers.ASHAScheduler`) stops the weaker half at each rung.

The criterion, `silhouette`: mean cosine silhouette of the frozen input features under the
trial's teacher assignments of that epoch (a sample of at most 2,000 points). Why this one:
- it is computed on the features, not the model: comparable across trials whose losses are not
  (ce_weight rescales CLUDI's loss, embedding_dim its MSE, the rescaling factor its noise);
- it is bounded and needs no labels;
- it falls both when classes are merged (cohesion drops) and when clusters are fragmented or
  assignments are noisy (separation drops), the two ways CLUDI goes wrong here.
Its known bias: it prefers partitions k-means would also like (convex, feature-space clusters).
Labels, when given, are reported as `acc` per epoch for the agreement study, never used.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)


def _trial(config: dict, features=None, labels=None) -> None:
    import ray.tune
    import torch
    from hydra.utils import get_method

    from raycluster.metrics import silhouette_sample, size_entropy, supervised_metrics
    from raycluster.train.loop import OptimConfig, make_optimizer, train_epochs

    torch.set_num_threads(int(config["threads"]))
    torch.manual_seed(config["seed"])
    model_config = {**config["model"], **{name: config[name] for name in config["searched"]}}
    model = get_method(config["model_factory"])(model_config)
    optim = OptimConfig(**config["optim"])
    optimizer = make_optimizer(model, optim)
    vectors = torch.tensor(features)   # a copy: arrays from the object store are read-only

    def on_epoch_end(epoch, terms, clusters, seen):
        score = silhouette_sample(features[seen], clusters, sample_size=2000, seed=config["seed"])
        known = labels is not None and (labels[seen] >= 0).all()
        ray.tune.report({"silhouette": -1.0 if score is None else score, "loss": terms["loss"],
                         "size_entropy": size_entropy(clusters, model_config["n_clusters"]),
                         "acc": supervised_metrics(labels[seen], clusters)["acc"] if known else float("nan"),
                         "epoch": epoch + 1})

    train_epochs(model, vectors, optim, optimizer, math.ceil(len(features) / optim.batch_size), 0, config["seed"],
                 None, on_epoch_end)


def asha_search(features: np.ndarray, model_factory: str, model_config: dict, optim: dict, space: dict,
                output_dir: str, labels: Optional[np.ndarray] = None, num_samples: int = 8, grace_period: int = 5,
                reduction_factor: int = 2, max_concurrent: int = 2, cpus_per_trial: float = 1.0,
                seed: int = 0) -> dict:
    """Sample `num_samples` configs from `space` ({name: [values]}, each a `tune.choice`),
    train each up to optim["epochs"] under ASHA, pick the best by the last reported
    silhouette. Returns {"best", "trials", "agreement"} (also written to `search.json`)."""
    import json

    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    from raycluster.io import atomic_write_bytes
    from raycluster.tune.progress import trial_lines

    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, features=np.ascontiguousarray(features, np.float32),
                                 labels=None if labels is None else np.asarray(labels)),
        {"cpu": cpus_per_trial})
    param_space = {name: ray.tune.choice(list(values)) for name, values in space.items()}
    param_space.update(model=model_config, optim=optim, model_factory=model_factory, searched=sorted(space),
                       seed=seed, threads=max(1, int(cpus_per_trial)))
    scheduler = ASHAScheduler(time_attr="epoch", max_t=int(optim["epochs"]), grace_period=grace_period,
                              reduction_factor=reduction_factor)
    tuner = ray.tune.Tuner(
        trainable, param_space=param_space,
        tune_config=ray.tune.TuneConfig(metric="silhouette", mode="max", scheduler=scheduler, num_samples=num_samples,
                                        max_concurrent_trials=max_concurrent,
                                        search_alg=ray.tune.search.BasicVariantGenerator(random_state=seed)),
        run_config=ray.tune.RunConfig(name="asha", storage_path=os.path.abspath(output_dir), verbose=0,
                                      callbacks=[trial_lines(num_samples, sorted(space),
                                                             ["epoch", "silhouette", "size_entropy", "acc"])]))
    results = tuner.fit()
    trials = []
    for result in results:
        if result.error:
            raise RuntimeError(f"a search trial failed: {result.error}")
        trials.append({**{name: result.config[name] for name in sorted(space)},
                       **{key: result.metrics[key] for key in ("silhouette", "acc", "size_entropy", "loss", "epoch")}})
    report = {"criterion": "silhouette", "best": max(trials, key=lambda t: t["silhouette"]), "trials": trials,
              "agreement": agreement(trials)}
    atomic_write_bytes(os.path.join(output_dir, "search.json"), json.dumps(report, indent=1, default=float).encode())
    return report


def agreement(trials: list) -> Optional[dict]:
    """How the label-free choice compares with the best trial by ACC. Both are read at each
    trial's last reported epoch, as Tune's choice is (trials ASHA stopped early included: the
    choice is made among them too)."""
    from scipy.stats import spearmanr

    scored = [t for t in trials if not math.isnan(t["acc"])]
    if len(scored) < 2:
        return None
    chosen = max(scored, key=lambda t: t["silhouette"])
    by_acc = sorted(scored, key=lambda t: -t["acc"])
    silhouettes, accs = [t["silhouette"] for t in scored], [t["acc"] for t in scored]
    # a rank correlation is undefined when either side is constant: None, not NaN (not valid JSON)
    constant = len(set(silhouettes)) < 2 or len(set(accs)) < 2
    return {"trials": len(scored), "chosen_acc": chosen["acc"], "best_acc": by_acc[0]["acc"],
            "chosen_rank_by_acc": by_acc.index(chosen) + 1,
            "spearman_silhouette_acc": None if constant else float(spearmanr(silhouettes, accs).statistic)}
