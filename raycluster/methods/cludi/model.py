"""CLUDI: clustering via self-supervised diffusion in cluster-assignment space.

Uziel et al., "Clustering via Self-Supervised Diffusion", ICML 2025; public code
BGU-CS-VIL/CLUDI (read at d89618d: cludi.py, diff_utils.py, loss_utils.py; the denoiser is
`UViTLin` of vit_new.py at 77086785, the one train_utils.py builds, not models.py's older one).
Pure torch: no Ray here (raycluster/train/ runs `training_step` under Ray Train).

Objects (B points, D noise draws per point, K clusters, d = embedding_dim, F = feature width):
- assignment embedding  z0 = sqrt(d) * normalize(softmax(logits / 0.1) @ normalize(C))   (B, d)
  with C the (K, d) fixed random cluster vectors (`return_embedding` of vit_new.py).
- denoiser  f(z_t, x, t, z_self) -> z0_hat: per-point MLP conditioned on the frozen feature x
  (projected once per batch, see `encode_features`), self-conditioning input concatenated
  with z_t, MLP time embedding added; magnitude-preserving SiLU; dropout 0.15 on the feature
  and assignment branches; head d -> K logits (see `AssignmentDenoiser`).
- noise: z_t = sqrt(a_t) z0 + sqrt(1 - a_t) * rescale * eps, a_t the sqrt schedule
  1 - sqrt(t/T + 1e-4) (Diffusion-LM), T = 1000, rescale = 49 in training and at the
  sampling start; loss weight min(SNR_t, gamma=5) / rescale (min-SNR, as the code).
- teacher: the batch repeated over D = 8 noise draws, DDIM (eta = 1, 25 steps, x0 clamped to
  [-1, 1] as the code) from z_T = rescale * eps -> logits -> targets softmax(logits / 0.1)
  -> teacher embedding z0_T.
- student: feature noise of norm U(0.2, 1) and feature dropout p ~ U(0.05, 0.1); z_t from the
  noised teacher embedding at a random t per draw; self-conditioning half the time; one-step
  z0_hat -> logits_S -> z0_S = embedding(softmax(logits_S / 0.1)).
- loss: min-SNR-weighted MSE(z0_S, z0_T) + 50 x symmetric self-classifier cross-entropy over
  all pairs of draws (row softmax T 0.1 normalised over the batch x B/K; column softmax T 0.05
  normalised over clusters): the B/K column prior is what prevents collapse.
- inference: M draws x S DDIM steps, mean of logits over draws, argmax; confidence = mean over
  draws of the winning cluster's probability.

Choices where code and paper leave room, and what was measured for them: docs/methods/cludi.md."""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F



@dataclass
class CludiConfig:
    n_clusters: int
    feature_dim: int = 384
    embedding_dim: int = 64
    depth: int = 5
    dropout: float = 0.15
    timesteps: int = 1000
    rescaling_factor: float = 49.0
    min_snr_gamma: float = 5.0
    teacher_draws: int = 8
    teacher_steps: int = 25
    ce_weight: float = 50.0
    assignment_temperature: float = 0.1
    row_temperature: float = 0.1
    column_temperature: float = 0.05
    feature_noise: tuple = (0.2, 1.0)
    feature_dropout: tuple = (0.05, 0.1)
    self_condition_prob: float = 0.5
    eval_draws: int = 64
    eval_steps: int = 50
    ema_teacher: Optional[float] = None
    teacher_gradients: bool = True
    warm_start_epochs: int = 0   # epochs whose teacher is the attached initial clusters (a label-free start), not the chain
    neighbor_view: int = 0       # k > 0: the student sees one of the row's k nearest sampled rows, the teacher the row
    start_anchor: float = 0.0    # after the warm start, the start's share of the teacher's target (0: the chain alone)

    def __post_init__(self):
        if not 0.0 <= self.start_anchor <= 1.0:
            raise ValueError(f"cludi: start_anchor must be in [0, 1], got {self.start_anchor}")


def sqrt_schedule(timesteps: int, offset: float = 1e-4) -> torch.Tensor:
    """(T,) float64 cumulative alphas a_t = 1 - sqrt(t / T + offset), t = 1..T (Diffusion-LM)."""
    t = torch.arange(1, timesteps + 1, dtype=torch.float64) / timesteps
    return (1 - torch.sqrt(t + offset)).clamp(min=1e-5)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(...) integer steps -> (..., dim) sinusoidal embedding (cos | sin)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[..., None] * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class MPSiLU(nn.Module):
    """SiLU divided by 0.596: unit output variance for unit-variance input (magnitude-preserving, EDM2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x) / 0.596


class AssignmentDenoiser(nn.Module):
    """x0-predicting denoiser over assignment embeddings, conditioned on a frozen feature.

    The public code's `UViTLin` (vit_new.py): feature branch F -> F, assignment branch
    [self_cond | z_t] (2d) -> F/2, concatenated (W = F + F/2), plus an MLP time embedding of
    width W; `depth` W x W layers, then W -> d -> d, LayerNorm, final d -> d.
    forward(z_t (N, d), context (N, F), t (N,) or broadcastable, self_cond (N, d)) -> z0_hat (N, d),
    where context = encode_features(features (N, F)). logits(z (..., d)) -> (..., K).
    """

    def __init__(self, feature_dim: int, n_clusters: int, embedding_dim: int = 64, depth: int = 5,
                 dropout: float = 0.15):
        super().__init__()
        self.embedding_dim = embedding_dim
        assignment_width = max(embedding_dim, feature_dim // 2)
        self.width = feature_dim + assignment_width
        self.feature_proj = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), MPSiLU(), nn.Linear(feature_dim, feature_dim),
            nn.LayerNorm(feature_dim, elementwise_affine=False, eps=1e-6), nn.Linear(feature_dim, feature_dim))
        self.feature_dropout = nn.Dropout(dropout)
        self.assignment_proj = nn.Sequential(
            nn.Linear(2 * embedding_dim, 2 * embedding_dim), MPSiLU(), nn.Linear(2 * embedding_dim, assignment_width),
            nn.LayerNorm(assignment_width, eps=1e-6), nn.Linear(assignment_width, assignment_width))
        self.assignment_dropout = nn.Dropout(dropout)
        self.time_embed = nn.Sequential(nn.Linear(self.width, 4 * self.width), MPSiLU(),
                                        nn.Linear(4 * self.width, self.width))
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(self.width, self.width), MPSiLU()]
        layers += [nn.Linear(self.width, embedding_dim), MPSiLU(), nn.Linear(embedding_dim, embedding_dim),
                   nn.LayerNorm(embedding_dim), nn.Linear(embedding_dim, embedding_dim)]
        self.network = nn.Sequential(*layers)
        self.head = nn.Linear(embedding_dim, n_clusters)
        # fixed random cluster vectors C (the paper; the code freezes them too); a buffer so they
        # travel with the state dict
        self.register_buffer("cluster_vectors", torch.randn(n_clusters, embedding_dim))

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        """(N, F) features -> (N, F) context (L2-normalised input, projected, dropout in train mode)."""
        return self.feature_dropout(self.feature_proj(F.normalize(features, dim=-1)))

    def forward(self, z_t, context, t, self_cond):
        assignment = self.assignment_dropout(self.assignment_proj(torch.cat([self_cond, z_t], dim=-1)))
        time = self.time_embed(timestep_embedding(t, self.width))
        return self.network(torch.cat([context, assignment], dim=-1) + time)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)

    def assignment_embedding(self, probabilities: torch.Tensor) -> torch.Tensor:
        """(..., K) probabilities -> (..., d) = sqrt(d) * normalize(probabilities @ normalize(C))."""
        mixture = probabilities @ F.normalize(self.cluster_vectors, dim=-1)
        return F.normalize(mixture, dim=-1) * math.sqrt(self.embedding_dim)


def add_feature_noise(features: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Add a random direction with norm ~ U(low, high) per point. (..., F) -> (..., F)."""
    direction = F.normalize(torch.randn_like(features), dim=-1)
    norm = torch.empty(features.shape[:-1] + (1,), device=features.device).uniform_(low, high)
    return features + direction * norm


def drop_features(features: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Dropout with a rate drawn from U(low, high) per call (features are re-normalised later)."""
    return F.dropout(features, p=float(np.random.uniform(low, high)), training=True)


def self_classifier_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                         weights: Optional[torch.Tensor] = None, row_temperature: float = 0.1,
                         column_temperature: float = 0.05) -> torch.Tensor:
    """Symmetric cross-entropy over all pairs of draws, with a uniform cluster prior.

    teacher_logits, student_logits: (D, B, K); weights: (D,) per-draw loss weights or None.
    log-probabilities: row softmax (T_row), normalised over the batch, times B/K; targets:
    column softmax over the batch (T_col), normalised over clusters. Follows
    `extended_new_loss_newnew` of the public code (after Self-Classifier, Amrani et al.).
    """
    batch, clusters = teacher_logits.shape[1], teacher_logits.shape[2]

    def log_probabilities(logits):
        rows = F.normalize(F.softmax(logits / row_temperature, dim=-1), p=1, dim=1, eps=1e-8)
        return torch.log(batch / clusters * rows + 1e-8)

    def targets(logits):
        return F.normalize(F.softmax(logits / column_temperature, dim=1), p=1, dim=2, eps=1e-8)

    # (D, 1, B, K) x (1, D, B, K) -> (D, D): every teacher draw against every student draw
    teacher_to_student = -(targets(teacher_logits)[:, None] * log_probabilities(student_logits)[None]).sum(-1).mean(-1)
    student_to_teacher = -(targets(student_logits)[:, None] * log_probabilities(teacher_logits)[None]).sum(-1).mean(-1)
    if weights is not None:
        teacher_to_student = teacher_to_student * weights[:, None]
        student_to_teacher = student_to_teacher * weights[None, :]
    return (teacher_to_student.mean() + student_to_teacher.mean()) / 2


def gather_batch(tensor: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Concatenate `tensor` over data-parallel workers along `dim`, keeping gradients.

    The self-classifier loss normalises over the batch (its B/K cluster prior), so with W
    workers it must see the global batch, not W separate ones: then 1 and W workers optimise the
    same objective. Backward reduce-scatters, and averaging gradients afterwards (train/run.py)
    gives exactly the gradient of the global loss. Identity without torch.distributed.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=dim)


def same_on_all_workers(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's value on every worker (the per-draw timesteps must agree once draws are gathered)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(tensor, src=0)
    return tensor


class CludiModel(nn.Module):
    """Denoiser + schedule + sampler + loss for one config; `training_step` is one CLUDI step."""

    def __init__(self, config: CludiConfig):
        super().__init__()
        self.config = config
        self.denoiser = AssignmentDenoiser(config.feature_dim, config.n_clusters, config.embedding_dim,
                                           config.depth, config.dropout)
        alphas = sqrt_schedule(config.timesteps)
        snr = alphas / (1 - alphas)
        self.register_buffer("alphas_cumprod", alphas.float(), persistent=False)
        self.register_buffer("loss_weight", (snr.clamp(max=config.min_snr_gamma) / config.rescaling_factor).float(),
                             persistent=False)
        self.teacher = None
        if config.ema_teacher:
            self.teacher = copy.deepcopy(self.denoiser).requires_grad_(False)
        self.initial_clusters: Optional[torch.Tensor] = None   # (n,) of the worker's rows (attach_row_columns)
        self.neighbors: Optional[torch.Tensor] = None          # (n, k) rows of `bank` (attach_row_columns)
        self.bank: Optional[torch.Tensor] = None               # (S, F) the sampled rows (attach_context)
        self.epoch = 0

    def attach_row_columns(self, initial_clusters=None, neighbors=None) -> None:
        """Per-row columns of the worker's training rows, computed as the rows are read:
        initial_clusters (n,) int64, the warm start's label-free clustering (the teacher of the
        first epochs); neighbors (n, k) int64, the row's nearest rows of the sampled bank (the
        student's view when `neighbor_view` > 0)."""
        if initial_clusters is not None:
            self.initial_clusters = torch.as_tensor(initial_clusters, dtype=torch.int64)
        if neighbors is not None:
            self.neighbors = torch.as_tensor(neighbors, dtype=torch.int64)

    def attach_context(self, bank) -> None:
        """bank (S, F) float32: the sampled training rows the `neighbors` column points into."""
        from raycluster.train.loop import shared_tensor

        self.bank = shared_tensor(bank, torch.float32).to(self.alphas_cumprod.device)

    def student_view(self, draws: torch.Tensor, row_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """(D, B, F) the rows' features -> what the student is conditioned on: with
        `neighbor_view`, for every draw one of each row's nearest bank rows picked at random
        (the pairs of TEMI and SCAN: a row and its neighbour should share a cluster)."""
        if not self.config.neighbor_view or self.neighbors is None or row_ids is None:
            return draws
        candidates = self.neighbors[row_ids.cpu()].to(draws.device)                    # (B, k)
        pick = torch.randint(0, candidates.shape[1], draws.shape[:2], device=draws.device)  # (D, B)
        return self.bank[candidates.gather(1, pick.T).T]

    def on_epoch_start(self, features: torch.Tensor, epoch: int) -> None:
        self.epoch = epoch

    def warm_start_teacher(self, row_ids: torch.Tensor, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The warm start's teacher: the initial clusters as (D, B, K) logits (one-hot / the
        assignment temperature's inverse, so their softmax is the one-hot) and their embedding."""
        clusters = self.initial_clusters[row_ids.cpu()].to(self.alphas_cumprod.device)
        logits = F.one_hot(clusters, self.config.n_clusters).float() * 10.0
        logits = logits[None].expand(draws, *logits.shape)
        return self.embedding_of(self.denoiser, logits), logits

    def anchor_to_start(self, teacher_logits: torch.Tensor, row_ids: torch.Tensor) -> torch.Tensor:
        """(D, B, K) chain logits -> logits whose assignment softmax is (1 - w) x the chain's +
        w x the start's one-hot, w = `start_anchor`: a teacher that cannot wander from its
        label-free start by more than the chain's confidence allows (it did without: one digits
        seed went from its start's clusters to a partly collapsed clustering after the hand-over)."""
        cfg = self.config
        start = F.one_hot(self.initial_clusters[row_ids.cpu()].to(teacher_logits.device), cfg.n_clusters).float()
        mixed = (1 - cfg.start_anchor) * F.softmax(teacher_logits / cfg.assignment_temperature, dim=-1) \
            + cfg.start_anchor * start
        return cfg.assignment_temperature * torch.log(mixed + 1e-8)

    def embedding_of(self, denoiser, logits):
        return denoiser.assignment_embedding(F.softmax(logits / self.config.assignment_temperature, dim=-1))

    def q_sample(self, z0, t, noise):
        """z_t = sqrt(a_t) z0 + sqrt(1 - a_t) noise; z0, noise (..., d); t broadcastable (...)."""
        alpha = self.alphas_cumprod[t][..., None]
        return alpha.sqrt() * z0 + (1 - alpha).sqrt() * noise

    def sample(self, denoiser, features: torch.Tensor, steps: int):
        """DDIM (eta = 1) in assignment space, as `gen_loop` of the public code.

        features: (D, B, F) (each draw its own chain). Returns (z0 (D, B, d), logits (D, B, K)).
        Differentiable: callers choose no_grad (inference) or not (teacher_gradients).
        """
        cfg = self.config
        context = denoiser.encode_features(features)
        times = torch.linspace(-1, cfg.timesteps - 1, steps + 1).long().tolist()[::-1]
        z_t = torch.randn(features.shape[:-1] + (cfg.embedding_dim,), device=features.device) * cfg.rescaling_factor
        self_cond = torch.zeros_like(z_t)
        for time, time_next in zip(times[:-1], times[1:]):
            t = torch.full(features.shape[:-1], time, device=features.device, dtype=torch.long)
            z_start = denoiser(z_t, context, t, self_cond).clamp(-1.0, 1.0)
            if time_next < 0:
                break
            alpha, alpha_next = self.alphas_cumprod[time], self.alphas_cumprod[time_next]
            predicted_noise = (z_t - alpha.sqrt() * z_start) / (1 - alpha).sqrt()
            sigma = ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
            c = (1 - alpha_next - sigma ** 2).clamp(min=0).sqrt()
            z_t = alpha_next.sqrt() * z_start + c * predicted_noise + sigma * torch.randn_like(z_t) * cfg.rescaling_factor
            self_cond = z_start
        logits = denoiser.logits(z_start)
        return self.embedding_of(denoiser, logits), logits

    def training_step(self, features: torch.Tensor, row_ids: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict]:
        """One CLUDI loss on a batch. features: (B, F) float; row_ids: (B,) positions of the rows
        in the worker's shard (used by the warm start). Returns (loss, terms) where terms holds detached floats and
        `teacher_clusters` (B,) int64 from the first draw."""
        cfg = self.config
        draws = features[None].expand(cfg.teacher_draws, *features.shape)          # (D, B, F)
        if self.initial_clusters is not None and row_ids is not None and self.epoch < cfg.warm_start_epochs:
            teacher_z0, teacher_logits = self.warm_start_teacher(row_ids, cfg.teacher_draws)
        else:
            teacher = self.teacher or self.denoiser
            was_training = teacher.training
            teacher.eval()
            with torch.set_grad_enabled(cfg.teacher_gradients and self.teacher is None and torch.is_grad_enabled()):
                teacher_z0, teacher_logits = self.sample(teacher, draws, cfg.teacher_steps)
            teacher.train(was_training)
            if cfg.start_anchor and self.initial_clusters is not None and row_ids is not None:
                teacher_logits = self.anchor_to_start(teacher_logits, row_ids)
                teacher_z0 = self.embedding_of(self.denoiser, teacher_logits)

        student_features = drop_features(add_feature_noise(self.student_view(draws, row_ids), *cfg.feature_noise),
                                         *cfg.feature_dropout)
        context = self.denoiser.encode_features(student_features)
        targets = F.softmax(teacher_logits / cfg.assignment_temperature, dim=-1)
        z0 = self.denoiser.assignment_embedding(targets)
        t = same_on_all_workers(torch.randint(0, cfg.timesteps, (cfg.teacher_draws,), device=features.device))  # per draw
        t_points = t[:, None].expand(draws.shape[:-1])
        z_t = self.q_sample(z0, t_points, torch.randn_like(z0) * cfg.rescaling_factor)
        self_cond = torch.zeros_like(z_t)
        if np.random.random() < cfg.self_condition_prob:
            with torch.no_grad():
                self_cond = self.denoiser(z_t, context, t_points, self_cond).detach()
        student_logits = self.denoiser.logits(self.denoiser(z_t, context, t_points, self_cond))
        student_z0 = self.embedding_of(self.denoiser, student_logits)

        weights = self.loss_weight[t]                                               # (D,)
        mse = (F.mse_loss(student_z0, teacher_z0, reduction="none").mean(-1).mean(-1) * weights).mean()
        cross_entropy = self_classifier_loss(gather_batch(teacher_logits), gather_batch(student_logits), weights,
                                             cfg.row_temperature, cfg.column_temperature)
        loss = mse + cfg.ce_weight * cross_entropy
        terms = {"loss": loss.item(), "loss_mse": mse.item(), "loss_ce": cross_entropy.item(),
                 "teacher_clusters": teacher_logits[0].argmax(-1).detach()}
        return loss, terms

    @torch.no_grad()
    def update_teacher(self) -> None:
        if self.teacher is not None:
            for teacher_param, param in zip(self.teacher.parameters(), self.denoiser.parameters()):
                teacher_param.lerp_(param, 1 - self.config.ema_teacher)

    @staticmethod
    def prediction_views(features: torch.Tensor, neighbor_features: Optional[torch.Tensor], draws: int) -> torch.Tensor:
        """(b, F) rows and (b, k, F) their nearest training rows or None -> (M, b, F): what each
        of the M draws is conditioned on. With neighbours the draws go round the row and its k
        neighbours, the views the model was trained on (teacher: the row; student: a neighbour)."""
        if neighbor_features is None:
            return features[None].expand(draws, *features.shape)
        views = torch.cat([features[:, None], neighbor_features], dim=1)           # (b, k + 1, F)
        return views[:, torch.arange(draws) % views.shape[1]].transpose(0, 1)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, draws: Optional[int] = None, steps: Optional[int] = None,
                batch_size: int = 4096, neighbor_features: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, F) features [, (N, k, F) their nearest training rows] -> (cluster (N,) int64,
        confidence (N,) float32)."""
        draws, steps = draws or self.config.eval_draws, steps or self.config.eval_steps
        denoiser = self.teacher or self.denoiser
        was_training = denoiser.training
        denoiser.eval()
        clusters, confidences = [], []
        per_chunk = max(1, batch_size // draws)
        around = neighbor_features.split(per_chunk) if neighbor_features is not None else itertools.repeat(None)
        for chunk, chunk_around in zip(features.split(per_chunk), around):
            views = self.prediction_views(chunk, chunk_around, draws)
            _, logits = self.sample(denoiser, views, steps)                         # (M, b, K)
            cluster = logits.mean(0).argmax(-1)
            probabilities = F.softmax(logits / self.config.assignment_temperature, dim=-1).mean(0)
            clusters.append(cluster)
            confidences.append(probabilities.gather(1, cluster[:, None])[:, 0])
        denoiser.train(was_training)
        return torch.cat(clusters), torch.cat(confidences).float()

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups as the code: no weight decay on biases and norm gains."""
        decayed = [p for p in self.denoiser.parameters() if p.ndim > 1]
        undecayed = [p for p in self.denoiser.parameters() if p.ndim <= 1]
        return [{"params": decayed, "lr": lr, "weight_decay": weight_decay},
                {"params": undecayed, "lr": lr, "weight_decay": 0.0}]


def build_cludi(model_config: dict) -> CludiModel:
    """Model factory for Ray Train workers: plain dict -> CludiModel (diffusers-style from_config)."""
    return CludiModel(CludiConfig(**model_config))
