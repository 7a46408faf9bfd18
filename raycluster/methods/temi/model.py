"""TEMI (Adaloglou et al., BMVC 2023, "Exploring the limits of deep image clustering using
pretrained models"), pure torch: clustering heads trained on pairs of k-nearest neighbours in a
frozen embedding space. Ray-free; `method.py` puts it behind the method interface.

Recipe (paper and HHU-MMBS/TEMI-official-BMVC2023), with the choices made here:
- Pairs: each anchor x is paired with one of its k = 50 nearest neighbours x' (cosine), drawn
  uniformly every time the anchor is seen. The neighbour table comes from raycluster.neighbors.
- Heads: H = 16 independent heads, each the public code's DINO head at its defaults (`nlayers`
  2, hidden 512, bottleneck 256): MLP D -> 512 -> 256 (GELU), L2-normalised, then a weight-
  normalised linear layer 256 -> K whose norm is learnt (`norm_last_layer` false) and frozen for
  the first epoch (`freeze_last_layer`); linear layers start from a truncated normal (std 0.02).
- Teacher: an EMA copy of all heads, no gradients; momentum from 0.996 to 1 on a cosine over
  the run (per epoch here, per step in the code).
- Loss per head: beta-PMI  -log sum_c (q_s(c|x) q_t(c|x'))^beta / pk(c), symmetrised over
  (x, x') <-> (x', x), beta = 0.6; pk is an EMA (0.9) of the teacher's mean batch probabilities,
  the cluster prior that keeps every cluster in use. Temperatures: student 0.1, teacher 0.1.
- Instance weighting: each pair is weighted by the teacher's agreement on it,
  sum_c q_t(c|x) q_t(c|x'), averaged over heads (detached): pairs the teacher believes are
  in different clusters (neighbours across a boundary) count less.
- Prediction: the head with the lowest loss (an EMA of its training loss; label-free selection,
  as the public code), argmax of its teacher probabilities; confidence is that probability.
- Loss over heads: their mean (the code's `head_losses.mean()`).
- Optimiser (configs/method/temi.yaml, the code's defaults): AdamW, lr 5e-4 and min lr 1e-6
  scaled by batch / 256 = 2e-3 at batch 1024, 10 warm-up epochs, cosine, weight decay 1e-4, no
  gradient clipping.
- Distributed: Ray Train workers each take a shard of the anchors; every worker holds all
  embeddings and the k-NN table (object store, `attach_context`) to look partners up.
  Gradients are averaged; the prior and head-loss buffers are per worker and rank 0's are
  checkpointed (they are running statistics, close across workers).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from raycluster.train.loop import shared_tensor


@dataclass
class TemiConfig:
    n_clusters: int = 10
    feature_dim: int = 384
    heads: int = 16
    hidden_dim: int = 512
    bottleneck_dim: int = 256
    beta: float = 0.6
    student_temperature: float = 0.1
    teacher_temperature: float = 0.1
    teacher_momentum: float = 0.996    # at the start; cosine to teacher_momentum_end over `epochs`
    teacher_momentum_end: float = 1.0
    epochs: int = 100                  # of the run (the momentum schedule's length; set by the method)
    prior_momentum: float = 0.9
    knn: int = 50                      # neighbours a partner is drawn from
    nlayers: int = 2                   # linear layers before the bottleneck's normalisation
    norm_last_layer: bool = False      # true: the last layer's norm fixed at 1 (DINO); false: learnt
    freeze_last_layer_epochs: int = 1


class ClusterHead(nn.Module):
    """(B, D) -> (B, K) logits: MLP -> unit bottleneck -> weight-normalised linear (DINO head)."""

    def __init__(self, in_dim: int, n_clusters: int, hidden_dim: int, bottleneck_dim: int, nlayers: int = 2,
                 norm_last_layer: bool = False):
        super().__init__()
        widths = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.GELU()]
        self.mlp = nn.Sequential(*layers[:-1])
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, n_clusters, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        # norm fixed at 1: logits are cosine similarities (DINO); TEMI's code learns it
        self.last.parametrizations.weight.original0.requires_grad = not norm_last_layer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(features), dim=-1))


def beta_pmi(student: torch.Tensor, teacher: torch.Tensor, prior: torch.Tensor, beta: float) -> torch.Tensor:
    """(B, K) student probs of x, (B, K) teacher probs of x', (K,) prior -> (B,) beta-PMI loss
    -log sum_c (q_s q_t)^beta / prior. Lowest when both put their mass on the same rare-enough cluster."""
    return -torch.log(((student * teacher).clamp_min(1e-12) ** beta / prior).sum(-1))


class TemiModel(nn.Module):
    """H student heads, their EMA teachers, one prior per head, and the neighbour table."""

    def __init__(self, config: TemiConfig):
        super().__init__()
        self.config = config
        self.students = nn.ModuleList(ClusterHead(config.feature_dim, config.n_clusters, config.hidden_dim,
                                                  config.bottleneck_dim, config.nlayers, config.norm_last_layer)
                                      for _ in range(config.heads))
        self.teachers = copy.deepcopy(self.students).requires_grad_(False)
        self.register_buffer("priors", torch.full((config.heads, config.n_clusters), 1.0 / config.n_clusters))
        self.register_buffer("head_losses", torch.zeros(config.heads))   # EMA of each head's loss
        # set by attach_context (not saved: rebuilt from the data on every worker)
        self.bank: Optional[torch.Tensor] = None        # (N, D) all embeddings
        self.neighbors: Optional[torch.Tensor] = None   # (N, knn) int64 global row ids

    def attach_context(self, bank, neighbors) -> None:
        """All embeddings (N, D) and their k-NN table (N, knn) (numpy or torch), for partner lookup."""
        self.bank = shared_tensor(bank, torch.float32)
        self.neighbors = shared_tensor(neighbors, torch.int64)

    def partners(self, row_ids: torch.Tensor) -> torch.Tensor:
        """(B,) global row ids -> (B, D) embeddings of one uniformly drawn neighbour each."""
        if self.neighbors is None:
            raise RuntimeError("TEMI needs attach_context(bank, neighbors) before training")
        table = self.neighbors[row_ids.cpu()]
        pick = torch.randint(0, table.shape[1], (len(row_ids), 1))
        return self.bank[table.gather(1, pick)[:, 0]].to(row_ids.device if row_ids.is_cuda else "cpu")

    def head_probabilities(self, heads: nn.ModuleList, features: torch.Tensor, temperature: float) -> torch.Tensor:
        """(B, D) -> (H, B, K) softmax probabilities of every head."""
        return torch.stack([F.softmax(head(features) / temperature, dim=-1) for head in heads])

    def loss(self, anchor: torch.Tensor, partner: torch.Tensor, update_prior: bool = True):
        """(B, D) anchors and partners -> (scalar loss, (H,) per-head losses, (H, B, K) teacher probs of anchors)."""
        cfg = self.config
        pair = torch.cat([anchor, partner])
        student = self.head_probabilities(self.students, pair, cfg.student_temperature)
        with torch.no_grad():
            teacher = self.head_probabilities(self.teachers, pair, cfg.teacher_temperature)
        s_anchor, s_partner = student.chunk(2, dim=1)
        t_anchor, t_partner = teacher.chunk(2, dim=1)
        weight = (t_anchor * t_partner).sum(-1).mean(0)                       # (B,) teacher agreement
        prior = self.priors[:, None, :].clone()   # updated in place below, before backward
        per_pair = 0.5 * (beta_pmi(s_anchor, t_partner, prior, cfg.beta) + beta_pmi(s_partner, t_anchor, prior, cfg.beta))
        per_head = (weight[None] * per_pair).mean(-1)                         # (H,)
        if update_prior and self.training:
            with torch.no_grad():
                self.priors.mul_(cfg.prior_momentum).add_(teacher.mean(1), alpha=1 - cfg.prior_momentum)
                self.priors.div_(self.priors.sum(-1, keepdim=True))
                self.head_losses.mul_(0.9).add_(per_head.detach(), alpha=0.1)
        return per_head.mean(), per_head, t_anchor

    def training_step(self, features: torch.Tensor, row_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """One step on (B, D) anchors with global `row_ids` (B,): (loss, terms); terms hold floats
        and `teacher_clusters` (B,) from the currently best head."""
        loss, per_head, teacher = self.loss(features, self.partners(row_ids))
        best = int(self.head_losses.argmin())
        return loss, {"loss": float(loss.detach()), "best_head_loss": float(per_head[best].detach()),
                      "teacher_clusters": teacher[best].argmax(-1).detach()}

    def on_epoch_start(self, features: torch.Tensor, epoch: int) -> None:
        """The epoch's teacher momentum (cosine from teacher_momentum to teacher_momentum_end), and
        the last layers frozen for the first `freeze_last_layer_epochs`."""
        import math

        cfg = self.config
        progress = min(1.0, epoch / max(1, cfg.epochs - 1))
        self.momentum = cfg.teacher_momentum_end - (cfg.teacher_momentum_end - cfg.teacher_momentum) * \
            (1 + math.cos(math.pi * progress)) / 2
        frozen = epoch < cfg.freeze_last_layer_epochs
        for head in self.students:
            head.last.parametrizations.weight.original1.requires_grad = not frozen

    @torch.no_grad()
    def update_teacher(self) -> None:
        momentum = getattr(self, "momentum", self.config.teacher_momentum)
        for teacher, student in zip(self.teachers.parameters(), self.students.parameters()):
            teacher.lerp_(student, 1 - momentum)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, head: Optional[int] = None,
                batch_size: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) -> (cluster (N,) int64, confidence (N,) float32) from one teacher head (default:
        the lowest-loss head)."""
        head = int(self.head_losses.argmin()) if head is None else head
        probabilities = torch.cat([F.softmax(self.teachers[head](chunk) / self.config.teacher_temperature, -1)
                                   for chunk in features.split(batch_size)])
        confidence, cluster = probabilities.max(-1)
        return cluster, confidence.float()

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict]:
        # every parameter that may learn (the last layers' directions are frozen for a while by
        # requires_grad, so they must be in the optimiser from the start); the fixed norm is not
        trainable = [p for name, p in self.students.named_parameters()
                     if p.requires_grad or name.endswith("original1")]
        return [{"params": trainable, "lr": lr, "weight_decay": weight_decay, "lr_scale": 1.0}]


def build_temi(model_config: dict) -> TemiModel:
    """Model factory for Ray Train workers: plain dict -> TemiModel."""
    return TemiModel(TemiConfig(**model_config))
