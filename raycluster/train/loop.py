"""The training loop, readable top to bottom; Ray-free so it runs in tests and on one process.

`train_epochs` drives any `TrainableModel`; the optional hooks it and `run.py` call are the
protocols below (declared here, so a model says what it takes part in). Under Ray Train,
`run.py` passes `average_gradients` (all-reduce over workers) and an `on_epoch_end` that
reports metrics and checkpoints.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from collections.abc import Mapping
from typing import Callable, Optional, Protocol, runtime_checkable

import torch


def shared_tensor(array, dtype: torch.dtype) -> torch.Tensor:
    """A tensor over a (possibly read-only) array from Ray's object store, without a copy: every
    worker of a node maps the same memory, and the models only read it. torch warns about
    non-writable arrays because writing through the tensor would fail; nothing here writes."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(array, dtype=dtype)


@runtime_checkable
class TrainableModel(Protocol):
    def training_step(self, batch: tuple) -> tuple[torch.Tensor, dict]: ...

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict]: ...


@runtime_checkable
class TeacherStudent(Protocol):
    """A model with a teacher that follows the student (EMA): called after every optimiser step."""

    def update_teacher(self) -> None: ...


@runtime_checkable
class EpochAware(Protocol):
    """A model that prepares each epoch from its worker's whole shard (DEC's targets, a schedule)."""

    def on_epoch_start(self, features: torch.Tensor, epoch: int) -> None: ...


@runtime_checkable
class UsesContext(Protocol):
    """A model that needs dataset-wide arrays beside its shard (TEMI: every embedding + the k-NN
    table); `run.py` hands them over once per worker, and the batch's row ids are dataset-wide."""

    def attach_context(self, **arrays) -> None: ...


@runtime_checkable
class TakesRowColumns(Protocol):
    """A model that takes per-row values the training dataset carries beside the features
    (CLUDI's warm-start clusters, computed as the rows are read); the batch's row ids are
    positions in the worker's shard."""

    def attach_row_columns(self, **columns: torch.Tensor) -> None: ...


@runtime_checkable
class ScoresHeldOut(Protocol):
    """A model that scores rows it is not trained on with its own training loss, deterministically
    (fixed noise): what `PlateauStop` watches."""

    def held_out_loss(self, rows: torch.Tensor) -> float: ...


@runtime_checkable
class KeepsShardState(Protocol):
    """A model with per-row state for its worker's shard (DEC's targets): `run.py` tells it which
    dataset rows are its shard's, and the batch's row ids are positions in that shard."""

    def attach_shard(self, shard_rows: torch.Tensor) -> None: ...


@dataclass
class PlateauStop:
    """Stop when the loss on held-out rows has stopped falling: `steps` (or epochs) is then a cap.

    Every `every_steps` optimizer steps the model scores the held-out rows (`ScoresHeldOut`); training
    stops at the first evaluation whose loss `window_steps` earlier has not been beaten by more than
    `tolerance` (relative) since. The caller keeps the rows `hold_out` picks out of training."""
    every_steps: int = 120
    window_steps: int = 360
    tolerance: float = 0.01
    held_out_rows: int = 1000

    def __post_init__(self):
        if min(self.every_steps, self.window_steps, self.held_out_rows) < 1 or not 0 <= self.tolerance < 1:
            raise ValueError(f"optim.stop: every_steps, window_steps and held_out_rows must be positive and tolerance "
                             f"in [0, 1), got {self}")
        if self.window_steps < self.every_steps:
            raise ValueError(f"optim.stop: window_steps ({self.window_steps}) must span at least one evaluation "
                             f"(every_steps {self.every_steps})")

    def reached(self, history: list) -> bool:
        """history: [(step, held-out loss), ...] in step order -> whether the loss has plateaued."""
        if not history:
            return False
        last = history[-1][0]
        earlier = [j for j, (step, _) in enumerate(history) if step <= last - self.window_steps]
        if not earlier:
            return False
        reference = history[earlier[-1]][1]
        best_since = min(loss for _, loss in history[earlier[-1] + 1:])
        return reference - best_since <= self.tolerance * reference

    def hold_out(self, rows, seed: int) -> tuple:
        """rows (N, F) -> (trained on (N - M, F), held out (M, F)), a random M = min(held_out_rows, N // 10)
        rows of the same seed's draw, both in row order."""
        import numpy as np

        held = min(self.held_out_rows, len(rows) // 10)
        if held < 1:
            raise ValueError(f"optim.stop holds out a tenth of the rows at most, and {len(rows)} rows have none")
        order = np.random.default_rng(seed).permutation(len(rows))
        return rows[np.sort(order[held:])], rows[np.sort(order[:held])]

    def due(self, step_before: int, step_after: int) -> bool:
        """Whether an evaluation falls in the steps (step_before, step_after] of one epoch."""
        return step_after // self.every_steps > step_before // self.every_steps


@dataclass
class OptimConfig:
    epochs: Optional[int] = 200
    # The schedule's length in optimizer steps, when set (`epochs` is then ignored): epochs become
    # ceil(steps / steps per epoch) of the rows trained on, so a small dataset gets as many updates
    # as a large one (at batch 128, 20 epochs of 10,000 rows are 1,580 steps; of 1,797 rows, 300).
    steps: Optional[int] = None
    batch_size: int = 256          # global batch; each of W workers takes batch_size / W
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 1
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.98)
    grad_clip: float = 4.0         # max gradient norm; 0: no clipping
    stop: Optional[PlateauStop] = None   # early stop on held-out rows; epochs / steps are then a cap

    def __post_init__(self):
        if isinstance(self.stop, Mapping):   # from a config file
            self.stop = PlateauStop(**self.stop)
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"optim.steps must be a positive number of optimizer steps, got {self.steps}")
        if self.steps is None and not self.epochs:
            raise ValueError("optim: give epochs or steps")


def epochs_for(optim: OptimConfig, steps_per_epoch: int) -> OptimConfig:
    """`optim` with `steps` turned into epochs of `steps_per_epoch` batches (unchanged without `steps`)."""
    if optim.steps is None:
        return optim
    return replace(optim, epochs=max(1, math.ceil(optim.steps / steps_per_epoch)), steps=None)


def learning_rate(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model, optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over `model.parameter_groups`; fused (one kernel for all parameters, on CPU as on
    CUDA): the per-parameter loop cost DiFiC ~4% of a CPU step (6.4M weights in ~300 tensors)."""
    return torch.optim.AdamW(model.parameter_groups(optim.lr, optim.weight_decay), lr=optim.lr, betas=optim.betas,
                             fused=True)


def train_epochs(model, features: torch.Tensor, optim: OptimConfig, optimizer: torch.optim.Optimizer,
                 steps_per_epoch: int, start_epoch: int = 0, seed: int = 0,
                 average_gradients: Optional[Callable] = None, on_epoch_end: Optional[Callable] = None,
                 row_ids: Optional[torch.Tensor] = None) -> None:
    """Train from `start_epoch` to `optim.epochs` on this worker's `features` (N, F) float32.

    Each epoch: a fresh permutation, `steps_per_epoch` batches (the same count on every worker,
    so gradient all-reduces pair up), warm-up + cosine lr per step, clip, step, teacher update.
    `on_epoch_end(epoch, terms, teacher_clusters, indices)` gets mean loss terms and the teacher's
    first-draw clusters of the points seen (for label-free and, when possible, labelled metrics;
    None for models without clusters, e.g. a denoiser being pretrained); it returns True to stop
    training there (an early stop, `PlateauStop`).
    `model.on_epoch_start(features, epoch)`, when the model has it, runs at each epoch start
    (DEC refreshes its self-training targets; DiFiC switches its object masks on).
    `row_ids` (N,) int64: ids of this worker's rows, passed to `training_step(batch, row_ids)`
    for models that look rows up (TEMI's neighbours: dataset-wide ids; DEC targets: positions).
    """
    per_worker = min(len(features), max(1, optim.batch_size // (torch.distributed.get_world_size()
                                                                if torch.distributed.is_initialized() else 1)))
    total_steps = optim.epochs * steps_per_epoch
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(start_epoch, optim.epochs):
        generator.manual_seed(seed * 100_003 + epoch)  # a resumed epoch sees the same order
        order = torch.randperm(len(features), generator=generator)
        if isinstance(model, EpochAware):   # e.g. DEC's targets, fixed for the epoch
            model.on_epoch_start(features, epoch)
        sums, clusters, seen, start = {}, [], [], time.time()
        for step in range(steps_per_epoch):
            indices = order[(step * per_worker) % len(features):][:per_worker]
            lr = learning_rate(epoch * steps_per_epoch + step, total_steps, optim.warmup_epochs * steps_per_epoch,
                               optim.lr, optim.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            batch = features[indices]
            loss, terms = model.training_step(batch) if row_ids is None else model.training_step(batch, row_ids[indices])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if average_gradients is not None:
                average_gradients(model)
            if optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
            optimizer.step()
            if isinstance(model, TeacherStudent):
                model.update_teacher()
            if "teacher_clusters" in terms:   # models that cluster; a plain denoiser has none
                clusters.append(terms.pop("teacher_clusters").cpu())
                seen.append(indices)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
        means = {key: value / steps_per_epoch for key, value in sums.items()}
        means.update(lr=lr, epoch_seconds=time.time() - start)
        if on_epoch_end is not None and on_epoch_end(epoch, means, torch.cat(clusters).numpy() if clusters else None,
                                                     torch.cat(seen).numpy() if seen else None):
            return
