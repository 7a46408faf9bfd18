"""Ray Train wiring: TorchTrainer over an embedding dataset, per-epoch report + checkpoint, resume.

`fit_with_ray_train(...)` is what a method's `fit` calls, with an array or with the
`TrainingData` of a store (`raycluster.data.rows`), whose parts the workers then read
themselves. Each worker takes its shard of the dataset (`ray.train.get_dataset_shard`), keeps
it in memory (N / workers rows: embeddings are small next to the images they came from), builds
the model from a plain config dict with the same seed on every worker, and runs
`loop.train_epochs` with gradients all-reduced across workers after each
backward (data parallel, as DDP; not the DDP wrapper itself, because a CLUDI step calls the
denoiser through several entry points - encode_features, forward, logits - and DDP only
hooks `forward`). Rank 0 writes a checkpoint every epoch; rerunning with the same
`storage_path` and `run_name` resumes from the latest one (Ray Train V2).
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import asdict
from typing import Callable, Optional

import numpy as np

from raycluster.config import TrainConfig
from raycluster.train.loop import KeepsShardState, OptimConfig, ScoresHeldOut, TakesRowColumns, shared_tensor

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def average_gradients(model) -> None:
    """All-reduce and average every gradient across the process group (data parallel)."""
    import torch.distributed as dist

    world = dist.get_world_size()
    for parameter in model.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= world


def _all_reduce_mean(values: dict) -> dict:
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, tensor.tolist())}


def quiet_report_lines() -> None:
    """Ray Train logs "Reporting training result N: ..." at INFO on every report (one a epoch)
    from a logger named by its file path, which `LoggingConfig(log_level=...)` does not reach
    (it filters loggers named ray.train*). Per-epoch metric lines are ours."""
    import ray.train.v2._internal.execution.context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def shard_columns(shard) -> dict:
    """A worker's whole shard as {column: numpy array}, in a stable order: by `order` (a key
    hash) when the dataset has it, since a read of several parts arrives in any order."""
    batches = list(shard.iter_batches(batch_size=65536, batch_format="numpy"))
    if not batches:
        raise RuntimeError("this Ray Train worker's shard of the training rows is empty")
    columns = {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}
    if "order" in columns:
        rank = np.argsort(columns.pop("order"), kind="stable")
        columns = {name: value[rank] for name, value in columns.items()}
    return columns


def attach_rows(model, columns: dict, shared: bool, n_rows: int):
    """Hand a worker's shard to the model; returns the row ids its `training_step` takes:
    positions in the shard, dataset-wide ids (to look rows up in a shared context), or None.

    columns: the shard's columns but features and label: `index` (dataset-wide ids, when the
    dataset has them) and the per-row values a model takes (`loop.TakesRowColumns`)."""
    import torch

    index = columns.pop("index", None)
    if columns:
        if not isinstance(model, TakesRowColumns):
            raise TypeError(f"{type(model).__name__} takes no per-row columns, but the dataset has {sorted(columns)}")
        model.attach_row_columns(**{name: torch.from_numpy(value) for name, value in columns.items()})
        return torch.arange(n_rows)
    if not (isinstance(model, KeepsShardState) or shared):
        return None
    if index is None:
        raise ValueError(f"{type(model).__name__} needs dataset-wide row ids (an `index` column)")
    if isinstance(model, KeepsShardState):
        model.attach_shard(torch.from_numpy(index))
        return torch.arange(n_rows)
    return torch.from_numpy(index)


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker. config: model_factory, model_config, optim (dict), seed."""
    import ray.train
    import torch
    import torch.distributed as dist

    from raycluster.metrics import size_entropy, supervised_metrics
    from raycluster.train.loop import epochs_for, make_optimizer, train_epochs

    quiet_report_lines()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if config.get("torch_threads"):   # Ray sets OMP threads to floor(CPUs); 1.5 CPUs should mean 2
        torch.set_num_threads(int(config["torch_threads"]))
    optim = OptimConfig(**config["optim"])
    torch.manual_seed(config["seed"])          # identical initial weights on every worker
    np.random.seed(config["seed"] * 1000 + rank)
    model = config["model_factory"](config["model_config"])
    device = ray.train.torch.get_device()
    model.to(device)
    shared = config.get("context")
    if shared:  # dataset-wide arrays a model needs beside its shard (loop.UsesContext)
        model.attach_context(**{name: ray.get(ref) for name, ref in shared.items()})

    columns = shard_columns(ray.train.get_dataset_shard("train"))
    features = torch.from_numpy(columns.pop("features")).float().to(device)
    labels = columns.pop("label")
    row_ids = attach_rows(model, columns, bool(shared), len(features))
    total = torch.tensor([len(features)])
    if dist.is_initialized():
        dist.all_reduce(total)
    steps_per_epoch = max(1, math.ceil(int(total) / optim.batch_size))
    optim = epochs_for(optim, steps_per_epoch)

    optimizer = make_optimizer(model, optim)
    start_epoch, resumed_from = 0, -1
    if optim.stop and not isinstance(model, ScoresHeldOut):
        raise TypeError(f"optim.stop needs a model that scores held-out rows; {type(model).__name__} has no held_out_loss")
    held_out = shared_tensor(ray.get(config["held_out"]), torch.float32).to(device) if optim.stop else None
    history = []   # [(step, held-out loss)] for optim.stop
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = torch.load(os.path.join(directory, STATE_FILE), map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = resumed_from = state["epoch"] + 1
        history = [tuple(pair) for pair in state.get("held_out_history", [])]
        if state.get("stopped"):   # an early stop is final: a rerun does not train on
            start_epoch = optim.epochs
        if rank == 0:
            log.warning("resuming from the checkpoint of epoch %d", state["epoch"])

    def on_epoch_end(epoch, terms, teacher_clusters, seen):
        metrics = _all_reduce_mean(terms)
        if teacher_clusters is not None:
            metrics["train/size_entropy"] = size_entropy(teacher_clusters, model.config.n_clusters)
        if teacher_clusters is not None and (labels[seen] >= 0).all():
            scores = supervised_metrics(labels[seen], teacher_clusters)
            metrics.update({"train/teacher_acc": scores["acc"], "train/teacher_nmi": scores["nmi"]})
        stopped, step = False, (epoch + 1) * steps_per_epoch
        if optim.stop and optim.stop.due(step - steps_per_epoch, step):
            loss = _all_reduce_mean({"held_out_loss": model.held_out_loss(held_out)})["held_out_loss"]
            history.append((step, loss))
            metrics["held_out_loss"] = loss
            stopped = optim.stop.reached(history) and epoch + 1 < optim.epochs
        metrics = {("train/" + k if "/" not in k else k): v for k, v in metrics.items()}
        metrics["epoch"] = epoch
        metrics["resumed_from_epoch"] = resumed_from
        if rank == 0:
            log.warning("epoch %d/%d %s", epoch + 1, optim.epochs,
                        "  ".join(f"{k.split('/')[-1]} {v:.4g}" for k, v in metrics.items() if "epoch" not in k))
            if metrics.get("train/size_entropy", 1.0) < 0.5:   # the pipeline's COLLAPSE_ENTROPY
                log.warning("WARNING epoch %d: size entropy %.3f: the clusters are collapsing into a few",
                            epoch + 1, metrics["train/size_entropy"])
            if stopped:
                log.warning("stopped at step %d of %d: the held-out loss fell by less than %g%% over the last %d "
                            "steps", step, optim.epochs * steps_per_epoch,
                            100 * optim.stop.tolerance, optim.stop.window_steps)
            elif optim.stop and epoch + 1 == optim.epochs and not optim.stop.reached(history):
                log.warning("WARNING: training reached its cap of %d steps (its `steps` setting) while the held-out "
                            "loss was still falling (by more than %g%% in %d steps): a longer cap may help",
                            optim.epochs * steps_per_epoch, 100 * optim.stop.tolerance, optim.stop.window_steps)
            with tempfile.TemporaryDirectory() as directory:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                            "model_config": config["model_config"], "held_out_history": history,
                            "step": step, "stopped": stopped}, os.path.join(directory, STATE_FILE))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(metrics)
        return stopped

    train_epochs(model, features, optim, optimizer, steps_per_epoch, start_epoch, config["seed"],
                 average_gradients if world > 1 else None, on_epoch_end, row_ids)


def stop_outcome(state: dict) -> dict:
    """What a fit's held-out stop did, from its final state: {"steps", "stopped_at_step" (None: ran to
    the cap), "held_out_loss" (the last evaluation's; None without one)}."""
    history = state.get("held_out_history", [])
    return {"steps": state["step"], "stopped_at_step": state["step"] if state.get("stopped") else None,
            "held_out_loss": history[-1][1] if history else None}


def fit_with_ray_train(model_factory: Callable, model_config: dict, data, optim: OptimConfig,
                       resources: TrainConfig, use_gpu: bool, storage_path: str, run_name: str, seed: int = 0,
                       labels: Optional[np.ndarray] = None, max_failures: int = 0,
                       context: Optional[dict] = None, reuse: str = "auto",
                       held_out: Optional[np.ndarray] = None) -> dict:
    """Train with TorchTrainer; returns the final checkpoint's state (model, optimizer, epoch,
    model_config) plus `metrics`, the last epoch's reported metrics.

    data: (N, F) float32 array (labels: (N,) for logged metrics), or a `TrainingData` (a store's
    rows, read by the workers; its labels are a column).

    context: {name: numpy array} every worker needs whole (put in the object store once, shared
    by the workers of a node), given to `model.attach_context(**context)`; never checkpointed.

    held_out: (M, F) float32 rows not in `data`, which `optim.stop` watches (`loop.PlateauStop`):
    every worker scores them with `model.held_out_loss`; training stops when that loss plateaus.

    Rerunning with the same storage_path/run_name resumes from the latest checkpoint, when its
    inputs (model config and the files it names, schedule but epochs, seed, rows, context) are the same;
    otherwise the old checkpoints are removed (reuse="strict": StaleArtifactError).
    """
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    from raycluster.data.rows import ArrayRows, TrainingData
    from raycluster.fingerprint import array_fingerprint, local_paths_in, reusable, write_fingerprint

    if not isinstance(data, TrainingData):
        data = ArrayRows(data, labels).training_data()
    if optim.stop and held_out is None:
        raise ValueError(f"{run_name}: optim.stop watches held-out rows, and none were given")

    run_dir = os.path.join(os.path.abspath(storage_path), run_name)
    # `epochs` is left out: a longer run continues from a shorter one's checkpoints.
    # `stop` only when set: runs without one keep the fingerprints they had before it existed.
    schedule = {k: v for k, v in asdict(optim).items() if k != "epochs" and not (k == "stop" and v is None)}
    inputs = {"model_factory": f"{model_factory.__module__}.{model_factory.__qualname__}", "model_config": model_config,
              "files": local_paths_in(model_config), "optim": schedule, "seed": seed,
              "rows": data.fingerprint,
              "context": {name: array_fingerprint(value) for name, value in (context or {}).items()},
              **({"held_out": array_fingerprint(held_out)} if optim.stop else {})}
    if not reusable(run_dir, inputs, f"{run_name} checkpoints", reuse):
        write_fingerprint(run_dir, inputs)

    worker_resources = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        worker_resources["GPU"] = resources.gpus_per_worker or 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"model_factory": model_factory, "model_config": model_config, "optim": asdict(optim),
                           "seed": seed, "torch_threads": max(1, math.ceil(resources.cpus_per_worker)),
                           "context": {name: ray.put(value) for name, value in (context or {}).items()},
                           "held_out": ray.put(held_out) if optim.stop else None},
        scaling_config=ray.train.ScalingConfig(num_workers=resources.num_workers, use_gpu=use_gpu,
                                               resources_per_worker=worker_resources),
        run_config=ray.train.RunConfig(name=run_name, storage_path=os.path.abspath(storage_path),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                       # per-epoch metric lines are ours; Ray Train's per-report and
                                       # per-checkpoint INFO lines (three a epoch) are not shown
                                       logging_config=ray.train.LoggingConfig(log_level="WARNING")),
        datasets={"train": data.dataset},
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name!r} ended without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, STATE_FILE), map_location="cpu", weights_only=True)
    state["metrics"] = dict(result.metrics or {})
    return state
