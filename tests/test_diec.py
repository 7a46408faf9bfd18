"""raycluster.methods.diec.model (pure torch), the DiEC method's stages and its Ray Train fine-tune."""
import numpy as np
import pytest
import torch

from raycluster.methods.diec.model import build_diec, cell_embeddings, dec_kl, student_t_assignments, target_distribution

from tests.test_unet_features import TINY_UNET


def test_target_is_sharper_than_q_and_rows_sum_to_one():
    torch.manual_seed(0)
    q = student_t_assignments(torch.randn(64, 5), torch.randn(4, 5))
    p = target_distribution(q)
    assert torch.allclose(q.sum(1), torch.ones(64), atol=1e-6) and torch.allclose(p.sum(1), torch.ones(64), atol=1e-6)
    entropy = lambda d: -(d * d.clamp_min(1e-12).log()).sum(1)
    # sharper: lower entropy on average and for almost every row (the division by cluster
    # frequency can flatten a row whose top cluster is crowded: that is the balancing term)
    assert entropy(p).mean() < 0.9 * entropy(q).mean()
    assert (entropy(p) < entropy(q)).float().mean() > 0.9
    balanced = target_distribution(q, torch.full((4,), 16.0))
    assert (balanced.argmax(1) == q.argmax(1)).all()   # equal frequencies: sharpened, never reassigned


def test_student_t_is_highest_for_the_nearest_centre_and_kl_vanishes_at_the_target():
    centers = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
    q = student_t_assignments(torch.tensor([[0.1, 0.0], [4.0, 0.5]]), centers)
    assert q.argmax(1).tolist() == [0, 1]
    assert dec_kl(q, q) < 1e-6 < dec_kl(q, target_distribution(q))


def test_target_frequencies_counter_a_dominant_cluster():
    q = torch.tensor([[0.6, 0.4]] * 9 + [[0.4, 0.6]])
    p = target_distribution(q)
    assert p[0, 1] > q[0, 1] * 0.9   # the crowded cluster's share is divided by its frequency


def tiny_patterns(n_per_class=40, seed=0):
    """Three classes of 6x6 images: a bright row at the top, a bright column left, a diagonal."""
    rng = np.random.default_rng(seed)
    base = np.zeros((3, 6, 6), np.float32)
    base[0, 1, :] = 1
    base[1, :, 1] = 1
    base[2] = np.eye(6)
    labels = np.repeat(np.arange(3), n_per_class)
    images = np.clip(base[labels] + rng.normal(0, 0.15, (len(labels), 6, 6)), 0, 1).astype(np.float32)
    return images.reshape(len(labels), 36), labels


def diec_config(**overrides):
    centers = np.random.default_rng(0).normal(size=(3, 16)).tolist()
    return {"n_clusters": 3, "unet": TINY_UNET, "image_shape": (1, 6, 6), "layer": "mid", "timestep": 50,
            "centers": centers, "eval_draws": 2, **overrides}


def test_a_training_step_sends_gradients_to_the_unet_and_the_centres():
    torch.manual_seed(0)
    model = build_diec(diec_config())
    pixels = torch.from_numpy(tiny_patterns()[0])
    model.on_epoch_start(pixels, epoch=0)
    assert model.targets.shape == (120, 3)
    loss, terms = model.training_step(pixels[:16], torch.arange(16))
    loss.backward()
    assert model.centers.grad is not None and model.centers.grad.abs().sum() > 0
    assert model.unet.mid_block.resnets[0].conv1.weight.grad.abs().sum() > 0
    assert model.unet.up_blocks[-1].resnets[0].conv1.weight.grad.abs().sum() > 0   # the denoising branch
    assert set(terms) >= {"kl", "denoise", "teacher_clusters"}
    cluster, confidence = model.predict(pixels)
    assert cluster.shape == (120,) and ((confidence > 0) & (confidence <= 1)).all()


def test_cell_embeddings_are_unit_scale_and_the_same_rows_give_the_same_embeddings():
    pixels = tiny_patterns()[0]
    config = {key: value for key, value in diec_config().items() if key != "centers"}
    probe, embeddings, scale = cell_embeddings(config, pixels, seed=3)
    assert embeddings.shape == (120, 16) and embeddings.dtype == np.float32 and scale > 0
    assert np.sqrt((embeddings.std(0) ** 2).mean()) == pytest.approx(1.0, rel=1e-4)
    again = probe.embeddings(torch.from_numpy(pixels), probe.config.eval_draws, 3).numpy() / scale
    np.testing.assert_allclose(again, embeddings, rtol=1e-5, atol=1e-6)   # seeded noise: predict sees the same rows


def test_initial_clusters_are_the_first_target_then_dec_takes_over():
    torch.manual_seed(0)
    model = build_diec(diec_config(initial_target_epochs=1))
    pixels, labels = tiny_patterns()
    initial = (labels + 1) % 3
    initial[:5] = -1                                  # rows the start left without a cluster
    shard = torch.arange(len(pixels) - 1, -1, -1)     # this worker holds the rows in reverse order
    model.attach_context(initial)
    model.attach_shard(shard)
    model.on_epoch_start(torch.from_numpy(pixels)[shard], epoch=0)
    expected = torch.from_numpy(initial)[shard]
    known = expected >= 0
    assert (model.targets[known].argmax(1) == expected[known]).all() and (model.targets[known].max(1).values == 1).all()
    assert (model.targets[~known].max(1).values < 1).all()   # DEC's soft p where there is no cluster
    model.on_epoch_start(torch.from_numpy(pixels)[shard], epoch=1)
    assert (model.targets.max(1).values < 1).all()           # then DEC's p everywhere
    assert torch.allclose(model.targets.sum(1), torch.ones(len(pixels)), atol=1e-6)


def test_a_typo_in_the_manifold_settings_fails_before_any_stage():
    from raycluster.methods.diec.method import DiEC

    with pytest.raises(ValueError, match=r"diec: unknown manifold setting\(s\) \['n_neighbor'\]"):
        DiEC(10, manifold={"n_neighbor": 15})


def test_wrong_number_of_centres_is_one_clear_error():
    with pytest.raises(ValueError, match="needs 3 initial centres"):
        build_diec(diec_config(centers=[[0.0] * 16] * 2))


@pytest.mark.slow
def test_two_worker_finetune_decreases_the_loss_and_resumes(ray_local, tmp_path):
    from raycluster.config import TrainConfig
    from raycluster.methods.diec.model import build_diec as factory
    from raycluster.train.loop import OptimConfig
    from raycluster.train.run import fit_with_ray_train

    pixels, labels = tiny_patterns()
    optim = OptimConfig(epochs=2, batch_size=40, lr=1e-3, min_lr=1e-3, warmup_epochs=0, weight_decay=0.0)
    workers = TrainConfig(num_workers=2, cpus_per_worker=0.5)
    config = diec_config(denoise_weight=0.1)
    first = fit_with_ray_train(factory, config, pixels, optim, workers, False, str(tmp_path), "diec", labels=labels)
    assert first["epoch"] == 1
    optim.epochs = 6
    resumed = fit_with_ray_train(factory, config, pixels, optim, workers, False, str(tmp_path), "diec", labels=labels)
    assert resumed["metrics"]["resumed_from_epoch"] == 2   # continued after epoch index 1, did not restart
    assert resumed["metrics"]["train/loss"] < first["metrics"]["train/loss"]


@pytest.mark.slow
def test_initial_clusters_reach_each_worker_by_dataset_row(ray_local, tmp_path):
    """Initial clusters (a relabelling of the classes) travel as shared context; each of two
    workers must look its own rows up by dataset id, or the model learns scrambled targets."""
    from raycluster.config import TrainConfig
    from raycluster.methods.diec.model import build_diec as factory
    from raycluster.train.loop import OptimConfig
    from raycluster.train.run import fit_with_ray_train

    pixels, labels = tiny_patterns()
    initial = (labels + 1) % 3
    optim = OptimConfig(epochs=3, batch_size=40, lr=3e-3, min_lr=3e-3, warmup_epochs=0, weight_decay=0.0)
    state = fit_with_ray_train(factory, diec_config(denoise_weight=0.0, initial_target_epochs=3), pixels, optim,
                               TrainConfig(num_workers=2, cpus_per_worker=0.5), False, str(tmp_path), "diec",
                               labels=labels, context={"initial_clusters": initial})
    model = factory(state["model_config"])
    model.load_state_dict(state["model"])
    cluster, _ = model.predict(torch.from_numpy(pixels))
    assert (cluster.numpy() == initial).mean() > 0.95   # the targets' own cluster ids, not a permutation


DIGITS_DIEC = ["method=diec", "data.source.limit=300", "method.image_shape=[1,8,8]",
               "++method.pretrain.unet={sample_size:8,block_out_channels:[8,16],norm_num_groups:4,"
               "down_block_types:[DownBlock2D,AttnDownBlock2D],up_block_types:[AttnUpBlock2D,UpBlock2D]}",
               "method.pretrain.optim.steps=30", "method.pretrain.optim.batch_size=100",
               "method.pretrain.optim.stop={every_steps:3,window_steps:3,tolerance:0.99,held_out_rows:30}",
               "method.search.layers=[down_1,mid,up_0]", "method.search.timesteps=[0,200]", "method.search.subset=200",
               "method.search.noise_cells=2", "method.search.noise_seeds=1",
               "method.model.pool=1", "method.optim.epochs=2", "cluster.train.cpus_per_worker=0.5"]


@pytest.mark.slow
def test_pretrain_then_tune_then_train_jobs_reuse_each_stage(ray_local, compose_config, tmp_path):
    """The three DiEC jobs as library calls on 300 digits: pretrain writes the UNet, tune writes
    the heatmaps and the label-free choice, train reuses both (its output: the start, output=start)."""
    import json
    import os

    from raycluster.app.pretrain import run_pretrain_diffusion
    from raycluster.app.pipeline import run_train
    from raycluster.app.tune import run_tune

    cfg = compose_config(DIGITS_DIEC)
    work = f"{tmp_path}/run/diec"
    with pytest.raises(FileNotFoundError, match="no pretrained UNet"):
        run_tune(cfg)
    pretrained = run_pretrain_diffusion(cfg)
    # 270 rows trained on (30 held out), 3 steps an epoch: tolerance 0.99 stops at the first full window, step 6 of 30
    assert pretrained["stopped_at_step"] == 6 and os.path.exists(f"{work}/pretrained/unet/config.json")
    tuned = run_tune(cfg)
    search = json.load(open(f"{work}/search/search.json"))
    assert len(search["rows"]) == 6 and search["criterion"] == "manifold_silhouette"
    from raycluster.tune.layer_timestep import choose_cell, criterion_noise

    # the near-tie band is the criterion's measured noise: its 2 best cells scored again with one more seed
    top = sorted(search["rows"], key=lambda row: -row["manifold_silhouette"])[:2]
    assert all(len(row["manifold_silhouette_other_seeds"]) == 1 for row in top)
    noise = criterion_noise([[row["manifold_silhouette"], *row["manifold_silhouette_other_seeds"]] for row in top])
    assert search["criterion_noise"] == pytest.approx(noise)
    assert search["tie_tolerance"] == pytest.approx(noise / abs(top[0]["manifold_silhouette"]))
    best = choose_cell(search["rows"], "manifold_silhouette", search["tie_tolerance"])
    assert (tuned["layer"], tuned["timestep"]) == (best["layer"], best["timestep"])
    assert all(-1 <= row["manifold_silhouette"] <= 1 and 0 < row["acc_start"] <= 1 for row in search["rows"])
    assert sorted(os.path.basename(p) for p in tuned["heatmaps"]) == ["heatmap_acc.png", "heatmap_manifold_silhouette.png"]
    summary = run_train(cfg)
    stages = summary["method_stages"]
    assert "pretrain_seconds" not in stages and "search_seconds" not in stages   # both reused
    assert stages["input_kept_variance"] == 1.0   # 8x8 images at 8 px: nothing downscaled
    assert stages["search"]["layer"] == tuned["layer"] and set(stages["init_kmeans"]) >= {"acc", "nmi"}
    assert summary["samples"] == 300 and 0 <= summary["metrics"]["acc"] <= 1
    # the saved method predicts the same assignments (jobs/predict.py runs it over any store)
    import pyarrow.parquet as pq

    from raycluster.data.store import EmbeddingStore
    from raycluster.methods.saving import load_fitted

    written = pq.read_table(summary["outputs"]["assignments"]).column("cluster").to_numpy()
    again, _ = load_fitted(summary["outputs"]["method"]).predict(EmbeddingStore(cfg.embeddings_path).load().vectors)
    assert (again == written).all()   # the noise draws of prediction are seeded


def test_output_start_assigns_by_the_start_without_a_finetune_and_survives_saving(tmp_path):
    """output=start: the UMAP + k-means start on the COL/COT embeddings is the output (no Ray
    Train run); a fitted row keeps its start cluster, a saved method predicts the same."""
    from raycluster.methods.diec.method import DiEC
    from raycluster.methods.saving import load_fitted, save_fitted

    pixels, labels = tiny_patterns()
    settings = {"_target_": "raycluster.methods.diec.method.DiEC", "n_clusters": 3, "image_shape": [1, 6, 6],
                "unet": TINY_UNET, "layer": "mid", "timestep": 50, "model": {"eval_draws": 2},
                "manifold": {"n_components": 2, "n_neighbors": 5, "metric": "euclidean", "n_init": 2},
                "output": "start", "work_dir": str(tmp_path / "diec")}
    method = DiEC(**{k: v for k, v in settings.items() if k != "_target_"}).fit(pixels, labels)
    cluster, confidence = method.predict(pixels)
    fitted = method.starter.fit_clusters
    assert (cluster[fitted >= 0] == fitted[fitted >= 0]).all() and confidence.shape == (len(pixels),)
    assert "finetune_seconds" not in method.stages and not (tmp_path / "diec" / "train").exists()
    save_fitted(method, str(tmp_path / "method.safetensors"), settings)
    np.testing.assert_array_equal(load_fitted(str(tmp_path / "method.safetensors")).predict(pixels)[0], cluster)
    # without a manifold the start is k-means on the embeddings: its centroids assign, and are saved too
    plain = {**settings, "manifold": None, "work_dir": str(tmp_path / "plain")}
    method = DiEC(**{k: v for k, v in plain.items() if k != "_target_"}).fit(pixels, labels)
    save_fitted(method, str(tmp_path / "plain.safetensors"), plain)
    np.testing.assert_array_equal(load_fitted(str(tmp_path / "plain.safetensors")).predict(pixels)[0],
                                  method.predict(pixels)[0])
    with pytest.raises(ValueError, match="output must be one of"):
        DiEC(3, output="dec")
