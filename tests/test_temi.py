"""TEMI: loss invariants (pure torch), the k-NN table, and a 2-worker Ray Train run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raycluster.methods.temi.model import TemiConfig, TemiModel, beta_pmi


def test_beta_pmi_prefers_agreement_on_a_cluster_and_penalises_collapse():
    k = 5
    uniform_prior = torch.full((k,), 1.0 / k)
    confident = torch.eye(k)[[0, 1, 2, 3, 4]]
    # partners that agree score better (lower) than partners that disagree
    agree = beta_pmi(confident, confident, uniform_prior, 0.6)
    disagree = beta_pmi(confident, confident.roll(1, dims=0), uniform_prior, 0.6)
    assert (agree < disagree).all()
    # the prior divides: agreeing on a cluster that already holds everything is worth less
    collapsed_prior = torch.tensor([0.96, 0.01, 0.01, 0.01, 0.01])
    assert beta_pmi(confident[:1], confident[:1], collapsed_prior, 0.6) > beta_pmi(confident[1:2], confident[1:2],
                                                                                   collapsed_prior, 0.6)


def test_model_shapes_teacher_ema_and_prior():
    torch.manual_seed(0)
    model = TemiModel(TemiConfig(n_clusters=4, feature_dim=8, heads=3, hidden_dim=16, bottleneck_dim=8, knn=2))
    bank = torch.randn(20, 8)
    neighbors = torch.stack([(torch.arange(20) + 1) % 20, (torch.arange(20) + 2) % 20], 1)
    model.attach_context(bank.numpy(), neighbors.numpy())
    partners = model.partners(torch.arange(5))
    assert partners.shape == (5, 8)
    assert all(any(torch.equal(partners[i], bank[j]) for j in neighbors[i]) for i in range(5))
    loss, terms = model.training_step(bank[:5], torch.arange(5))
    assert loss.ndim == 0 and terms["teacher_clusters"].shape == (5,)
    assert torch.allclose(model.priors.sum(-1), torch.ones(3))
    before = [p.clone() for p in model.teachers.parameters()]
    loss.backward()
    for p in model.students.parameters():
        if p.requires_grad:
            p.data -= 0.1 * p.grad
    model.update_teacher()
    moved = [not torch.equal(a, b) for a, b in zip(before, model.teachers.parameters()) if a.dtype.is_floating_point]
    assert any(moved) and all(p.grad is None for p in model.teachers.parameters())
    cluster, confidence = model.predict(bank)
    assert cluster.shape == (20,) and ((confidence > 0) & (confidence <= 1)).all()


def test_model_without_neighbors_says_so():
    model = TemiModel(TemiConfig(n_clusters=3, feature_dim=4, heads=1, hidden_dim=8, bottleneck_dim=4))
    with pytest.raises(RuntimeError, match="attach_context"):
        model.training_step(torch.randn(2, 4), torch.arange(2))


@pytest.mark.slow
def test_two_worker_ray_train_recovers_a_mixture(tmp_path, ray_local):
    """Sharded exact k-NN table (2 shards) + 2 Ray Train workers on 6 well-separated clusters
    (a faster teacher than the paper's 0.996: 180 steps, not tens of thousands)."""
    from raycluster.methods.temi.method import TEMI
    from raycluster.metrics import cluster_acc

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16)) * 4
    labels = rng.integers(0, 6, size=600)
    vectors = (centres[labels] + rng.normal(size=(600, 16))).astype(np.float32)
    method = TEMI(6, model={"heads": 4, "hidden_dim": 64, "bottleneck_dim": 32, "knn": 10, "teacher_momentum": 0.95},
                  optim={"epochs": 30, "batch_size": 100, "lr": 2e-3, "warmup_epochs": 2},
                  train={"num_workers": 2, "cpus_per_worker": 0.5}, index_shards=2,
                  storage_path=str(tmp_path / "train"))
    method.fit(vectors, labels)
    cluster, confidence = method.predict(vectors)
    assert cluster_acc(labels, cluster) >= 0.9
    assert confidence.shape == (600,) and method.knn_seconds > 0
    with pytest.raises(ValueError, match="knn=700"):
        TEMI(6, model={"knn": 700}).fit(vectors)


def test_a_fitted_method_crosses_processes_as_its_state_dict():
    """Ray returns the fitted method from its fit task by pickling it; TEMI's weight-normalised
    heads refuse pickle ("only supported through state_dict"), which broke jobs/train.py method=temi."""
    import pickle
    from dataclasses import asdict

    from raycluster.methods.temi.method import TEMI

    config = TemiConfig(n_clusters=4, feature_dim=8, heads=2, hidden_dim=16, bottleneck_dim=8, knn=2)
    method = TEMI(4)._restore({"model_config": asdict(config), "model": TemiModel(config).state_dict()})
    again = pickle.loads(pickle.dumps(method))
    vectors = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    np.testing.assert_array_equal(method.predict(vectors)[0], again.predict(vectors)[0])
