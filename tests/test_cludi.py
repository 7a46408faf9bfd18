"""CLUDI's pure torch pieces (no Ray) and its Ray Train run (2 workers on 2 CPUs)."""
import numpy as np
import pytest
import torch

from raycluster.methods.cludi.model import CludiConfig, CludiModel, self_classifier_loss, sqrt_schedule
from raycluster.metrics import supervised_metrics
from raycluster.train.loop import OptimConfig, learning_rate, make_optimizer, train_epochs


def small_config(**overrides):
    config = dict(n_clusters=4, feature_dim=128, embedding_dim=8, depth=1, teacher_draws=2, teacher_steps=3,
                  eval_draws=4, eval_steps=3)
    config.update(overrides)
    return CludiConfig(**config)


def mixture(n_per=60, k=4, dim=128, spread=0.3, seed=0):
    """k Gaussian blobs in `dim` dimensions (feature noise of norm up to 1 needs room: in 16-d
    it swamps the cluster identity of unit-norm features, in 128-d it does not)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + spread * rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def test_sqrt_schedule_endpoints_and_monotone():
    alphas = sqrt_schedule(1000)
    assert alphas.shape == (1000,)
    assert alphas[0] == pytest.approx(1 - np.sqrt(1 / 1000 + 1e-4), rel=1e-6)   # ~0.967: t=1 is already noisy
    assert alphas[-1] == pytest.approx(1e-5)                                     # clamped: pure noise at T
    assert torch.all(alphas[1:] <= alphas[:-1])


def test_denoiser_and_sampler_shapes():
    model = CludiModel(small_config())
    features = torch.randn(3, 5, 128)                      # (D, B, F)
    z0, logits = model.sample(model.denoiser, features, steps=3)
    assert z0.shape == (3, 5, 8) and logits.shape == (3, 5, 4)
    embedding = model.denoiser.assignment_embedding(torch.eye(4))
    assert torch.allclose(embedding.norm(dim=-1), torch.full((4,), np.sqrt(8.0)), atol=1e-5)  # one-hot -> sqrt(d)
    mixed = model.denoiser.assignment_embedding(torch.softmax(torch.randn(6, 4), dim=-1))
    assert torch.allclose(mixed.norm(dim=-1), torch.full((6,), np.sqrt(8.0)), atol=1e-5)      # normalised mixtures too
    cluster, confidence = model.predict(torch.randn(7, 128))
    assert cluster.shape == (7,) and cluster.dtype == torch.int64
    assert torch.all((confidence > 0) & (confidence <= 1))


def test_loss_is_minimised_by_the_teacher_target():
    torch.manual_seed(0)
    teacher = torch.randn(2, 32, 4) * 5
    agreeing = self_classifier_loss(teacher, teacher.clone())
    random_student = self_classifier_loss(teacher, torch.randn(2, 32, 4) * 5)
    assert agreeing < random_student


def test_uniform_prior_prevents_collapse():
    """All points in one cluster scores worse than a balanced assignment of equal confidence."""
    one_hot = lambda clusters: torch.nn.functional.one_hot(clusters, 4).float()[None] * 10
    collapsed = one_hot(torch.zeros(32, dtype=torch.long))
    balanced = one_hot(torch.arange(32) % 4)
    assert self_classifier_loss(collapsed, collapsed) > self_classifier_loss(balanced, balanced) + 1.0


def test_training_step_gives_gradients_everywhere():
    model = CludiModel(small_config())
    loss, terms = model.training_step(torch.randn(32, 128))
    loss.backward()
    assert {"loss", "loss_mse", "loss_ce"} <= set(terms) and terms["teacher_clusters"].shape == (32,)
    assert not model.denoiser.cluster_vectors.requires_grad          # fixed random vectors (the paper)
    assert "denoiser.cluster_vectors" in model.state_dict()             # ... saved with the model
    assert model.denoiser.feature_proj[0].weight.grad.abs().sum() > 0


def test_learning_rate_warmup_then_cosine():
    assert learning_rate(0, 100, 10, 1e-3, 1e-6) == pytest.approx(1e-4)
    assert learning_rate(9, 100, 10, 1e-3, 1e-6) == pytest.approx(1e-3)
    assert learning_rate(100, 100, 10, 1e-3, 1e-6) == pytest.approx(1e-6)


def test_plain_loop_recovers_a_mixture_without_ray():
    torch.manual_seed(0)
    np.random.seed(0)
    vectors, labels = mixture()
    model = CludiModel(small_config())
    optim = OptimConfig(epochs=25, batch_size=120, lr=1e-3)
    train_epochs(model, torch.from_numpy(vectors), optim, make_optimizer(model, optim), steps_per_epoch=3)
    cluster, _ = model.predict(torch.from_numpy(vectors))
    assert supervised_metrics(labels, cluster.numpy())["acc"] >= 0.9


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_checkpoint_resume_continues_from_last_epoch(tmp_path, ray_local):
    from raycluster.train.run import fit_with_ray_train
    from raycluster.methods.cludi.model import build_cludi
    from raycluster.config import TrainConfig

    vectors, _ = mixture(n_per=30)
    config = {**small_config().__dict__}
    first = fit_with_ray_train(build_cludi, config, vectors, OptimConfig(epochs=2, batch_size=60), TrainConfig(1, 0.5),
                               False, str(tmp_path), "resume")
    assert first["epoch"] == 1 and first["metrics"]["resumed_from_epoch"] == -1
    # "Interrupted" after 2 of 4 epochs: the same run name picks up at epoch 2, weights and optimizer restored.
    second = fit_with_ray_train(build_cludi, config, vectors, OptimConfig(epochs=4, batch_size=60), TrainConfig(1, 0.5),
                                False, str(tmp_path), "resume")
    assert second["epoch"] == 3 and second["metrics"]["resumed_from_epoch"] == 2
    assert second["optimizer"]["state"][0]["step"] > first["optimizer"]["state"][0]["step"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_workers_fit_on_a_store_without_reading_every_row_into_one_process(tmp_path, ray_local, monkeypatch):
    """The store path: PCA and warm start on a sample; two data-parallel Ray Train workers split
    the store's rows and read the parts themselves (projected, each row with its warm-start
    cluster and its neighbours among the sampled rows), gradients all-reduced; `load()` would
    fail the test."""
    from raycluster.data.rows import StoreRows
    from raycluster.data.store import EmbeddingStore
    from raycluster.methods.cludi.method import CLUDI

    vectors, labels = mixture(n_per=60)
    store = EmbeddingStore(str(tmp_path / "store"))
    for part in range(3):                      # keys interleave the classes across parts
        rows = np.arange(part, len(vectors), 3)
        store.write_part(f"shard-{part:06d}.tar", [f"k{i:05d}" for i in rows], labels[rows], vectors[rows],
                         from_shard=False)
    monkeypatch.setattr(StoreRows, "load", lambda self: pytest.fail("CLUDI read every row into one process"))
    # The warm start's teacher for the whole run: the student learns each row's streamed
    # initial cluster, so a row paired with another row's cluster would show in the ACC.
    model = {k: v for k, v in small_config(feature_dim=32, warm_start_epochs=12, neighbor_view=3).__dict__.items()
             if k not in ("n_clusters", "feature_dim")}
    method = CLUDI(4, model=model, optim={"epochs": 12, "batch_size": 48, "lr": 1e-3},
                   train={"num_workers": 2, "cpus_per_worker": 0.5}, storage_path=str(tmp_path / "train"),
                   run_name="store", seed=0, input_dim=32, sample_rows=120)
    method.fit_rows(StoreRows(EmbeddingStore(store.root)), with_labels=True)
    assert method.projection.components.shape == (32, 128)       # fitted on the 120-row sample
    assert method.stages["warm_start"]["acc"] >= 0.9
    cluster, confidence = method.predict(vectors)
    assert supervised_metrics(labels, cluster)["acc"] >= 0.9
    assert confidence.shape == (240,) and confidence.min() > 0
    with pytest.raises(Exception, match="width 64, the method was fitted on 128"):
        method.predict(vectors[:, :64])
    # What the checkpoints are keyed on: the store's parts and the fitted transforms, not a copy of the rows.
    from raycluster.methods.cludi.method import training_columns

    arguments = {"projection": method.projection}
    first = StoreRows(EmbeddingStore(store.root)).training_data(training_columns, arguments).fingerprint
    assert StoreRows(EmbeddingStore(store.root)).training_data(training_columns, arguments).fingerprint == first
    store.write_part("shard-000000.tar", ["k00000"], [0], vectors[:1], from_shard=False)   # a part rewritten
    assert StoreRows(EmbeddingStore(store.root)).training_data(training_columns, arguments).fingerprint != first


def test_save_and_load_give_the_same_predictions(tmp_path):
    from dataclasses import asdict

    from raycluster.methods.cludi.method import CLUDI
    from raycluster.methods.saving import load_fitted, save_fitted

    trained = CLUDI(4, seed=3)
    config = asdict(small_config())
    trained._restore({"model_config": config, "model": CludiModel(small_config()).state_dict()})
    save_fitted(trained, str(tmp_path / "method.safetensors"),
                {"_target_": "raycluster.methods.cludi.method.CLUDI", "n_clusters": 4, "seed": 3})
    restored = load_fitted(str(tmp_path / "method.safetensors"))
    vectors, _ = mixture(n_per=10)
    np.testing.assert_array_equal(trained.predict(vectors)[0], restored.predict(vectors)[0])


def test_warm_start_teaches_the_initial_clusters_then_hands_over_to_the_chain():
    """From a random start the teacher's DDIM chain gives every point one cluster (Lite0 photo
    features: size entropy 0 from epoch 2); the warm start's teacher is a label-free clustering."""
    torch.manual_seed(0)
    vectors, labels = mixture(n_per=30)
    model = CludiModel(small_config(warm_start_epochs=2))
    initial = (labels + 1) % 4                       # any clustering of the rows, by position in the shard
    model.attach_row_columns(initial_clusters=torch.from_numpy(initial))
    rows = torch.arange(len(vectors))
    model.on_epoch_start(None, 0)
    _, terms = model.training_step(torch.from_numpy(vectors), rows)
    assert (terms["teacher_clusters"].numpy() == initial).all()
    model.on_epoch_start(None, 2)                    # warm start over: the chain is the teacher again
    _, terms = model.training_step(torch.from_numpy(vectors), rows)
    assert not (terms["teacher_clusters"].numpy() == initial).all()


def test_start_anchor_keeps_the_start_in_the_teachers_target_after_the_hand_over():
    """A teacher that can wander from its start did: one digits seed partly collapsed after the
    hand-over. With `start_anchor` w the target is (1 - w) x the chain's + w x the start's one-hot."""
    torch.manual_seed(0)
    vectors, labels = mixture(n_per=30)
    initial = (labels + 1) % 4
    rows = torch.arange(len(vectors))
    model = CludiModel(small_config(warm_start_epochs=1, start_anchor=0.3))
    model.attach_row_columns(initial_clusters=torch.from_numpy(initial))
    chain = torch.randn(2, len(rows), 4)
    target = torch.softmax(model.anchor_to_start(chain, rows) / 0.1, dim=-1)
    expected = 0.7 * torch.softmax(chain / 0.1, dim=-1) + 0.3 * torch.nn.functional.one_hot(torch.from_numpy(initial), 4)
    assert torch.allclose(target, expected, atol=1e-5)
    model = CludiModel(small_config(warm_start_epochs=1, start_anchor=1.0))   # all start: the chain cannot move it
    model.attach_row_columns(initial_clusters=torch.from_numpy(initial))
    model.on_epoch_start(None, 1)
    _, terms = model.training_step(torch.from_numpy(vectors), rows)
    assert (terms["teacher_clusters"].numpy() == initial).all()
    with pytest.raises(ValueError, match="start_anchor must be in"):
        small_config(start_anchor=1.5)


def test_cludi_reduces_wide_rows_and_saves_the_projection(tmp_path):
    from raycluster.methods.cludi.method import CLUDI
    from raycluster.methods.saving import load_fitted, save_fitted
    from raycluster.data.postprocess import Postprocess

    vectors, _ = mixture(n_per=10)                   # 128-d
    method = CLUDI(4, seed=1, input_dim=16)
    method.projection = Postprocess.fit(vectors, 16, False)
    method._restore({"model_config": asdict_config(small_config(feature_dim=16)),
                     "model": CludiModel(small_config(feature_dim=16)).state_dict()})
    save_fitted(method, str(tmp_path / "m.safetensors"),
                {"_target_": "raycluster.methods.cludi.method.CLUDI", "n_clusters": 4, "seed": 1, "input_dim": 16})
    again = load_fitted(str(tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(method.predict(vectors)[0], again.predict(vectors)[0])
    with pytest.raises(ValueError, match="width 8"):
        again.predict(vectors[:, :8])


def asdict_config(config):
    from dataclasses import asdict

    return asdict(config)


def test_neighbor_view_conditions_the_student_on_a_neighbour_of_each_row():
    """With `neighbor_view` the student sees one of the row's bank neighbours (picked per draw),
    the teacher the row itself; without the columns the student sees the row."""
    vectors, labels = mixture(n_per=30)
    bank = vectors[::-1].copy()
    neighbors = np.stack([np.arange(len(vectors))[::-1], np.roll(np.arange(len(vectors))[::-1], 1)], axis=1)
    model = CludiModel(small_config(neighbor_view=2, teacher_draws=8))
    rows = torch.arange(len(vectors))
    draws = torch.from_numpy(vectors)[None].expand(8, *vectors.shape)
    assert model.student_view(draws, rows) is draws              # nothing attached yet
    model.attach_context(bank=bank)
    model.attach_row_columns(neighbors=torch.from_numpy(neighbors))
    seen = model.student_view(draws, rows)                       # (D, B, F) rows of the bank
    assert seen.shape == draws.shape
    first = torch.from_numpy(bank)[torch.from_numpy(neighbors[:, 0])]    # == the row itself here
    second = torch.from_numpy(bank)[torch.from_numpy(neighbors[:, 1])]
    is_first = (seen == first).all(-1)
    assert (is_first | (seen == second).all(-1)).all() and is_first.any() and (~is_first).any()
    loss, _ = model.training_step(torch.from_numpy(vectors), rows)
    loss.backward()
    assert torch.isfinite(loss)


def test_prediction_draws_go_round_the_row_and_its_neighbours_and_the_bank_is_saved(tmp_path):
    from raycluster.methods.cludi.method import CLUDI
    from raycluster.methods.saving import load_fitted, save_fitted
    from raycluster.neighbors.manifold import BankNeighbors

    rows, around = torch.zeros(3, 2), torch.ones(3, 2, 2) * torch.tensor([1.0, 2.0])[None, :, None]
    views = CludiModel.prediction_views(rows, around, 7)                 # (M, b, F): row, n1, n2, row, ...
    assert views.shape == (7, 3, 2)
    assert views[:, 0, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert CludiModel.prediction_views(rows, None, 4).shape == (4, 3, 2)

    vectors, _ = mixture(n_per=10)
    method = CLUDI(4, seed=2, input_dim=None)
    method.neighbors = BankNeighbors(vectors, 3)
    method._restore({"model_config": asdict_config(small_config(neighbor_view=3)),
                     "model": CludiModel(small_config(neighbor_view=3)).state_dict()})
    save_fitted(method, str(tmp_path / "m.safetensors"),
                {"_target_": "raycluster.methods.cludi.method.CLUDI", "n_clusters": 4, "seed": 2, "input_dim": None})
    again = load_fitted(str(tmp_path / "m.safetensors"))
    assert again.neighbors.k == 3 and np.array_equal(again.neighbors.bank, vectors)
    np.testing.assert_array_equal(method.predict(vectors)[0], again.predict(vectors)[0])
    method.neighbors = None                                              # the views change what is predicted
    assert not np.array_equal(method.predict(vectors)[1], again.predict(vectors)[1])
