"""raycluster.diffusion: UNet from config / saved folder, pixel mapping, denoising objective, pretraining."""
import numpy as np
import pytest
import torch

from raycluster.diffusion.objective import build_denoiser, denoising_loss
from raycluster.diffusion.unet import build_scheduler, load_unet, save_unet, to_model_input

from tests.test_unet_features import TINY_UNET


def test_pixels_map_to_centred_padded_model_input():
    pixels = torch.ones(2, 36) * 0.5
    pixels[:, 0] = 1.0
    images = to_model_input(pixels, (1, 6, 6), 8)
    assert images.shape == (2, 1, 8, 8)
    assert images[0, 0, 1, 1] == 1.0 and images[0, 0, 1, 2] == 0.0   # [0, 1] -> [-1, 1], offset by 1
    assert (images[:, :, 0, :] == -1).all() and (images[:, :, :, -1] == -1).all()   # background padding


def test_larger_images_are_downscaled_to_the_sample_size_then_padded():
    square = to_model_input(torch.ones(3, 28 * 28) * 0.75, (1, 28, 28), 16)
    assert square.shape == (3, 1, 16, 16)
    assert torch.allclose(square, torch.full_like(square, 0.5))   # a flat image stays flat: no padding
    stroke = torch.zeros(1, 1, 28, 28)
    stroke[..., :, 12:16] = 1.0                                       # a vertical bar in the middle
    resized = to_model_input(stroke.flatten(1), (1, 28, 28), 16)[0, 0]
    assert resized[:, 7:9].min() > 0.9 and resized[:, 0].max() < -0.999  # kept in place, background stays
    wide = to_model_input(torch.ones(1, 20 * 10), (1, 10, 20), 8)[0, 0]   # aspect kept: 10x20 -> 4x8, padded
    assert torch.allclose(wide[2:6], torch.ones(4, 8)) and (wide[:2] == -1).all() and (wide[6:] == -1).all()


def test_images_at_most_half_the_sample_size_are_enlarged_by_a_whole_factor():
    digits = torch.rand(2, 8 * 8)
    enlarged = to_model_input(digits, (1, 8, 8), 16)
    assert enlarged.shape == (2, 1, 16, 16) and (enlarged > -1).float().mean() > 0.9   # fills the canvas, no border
    assert torch.allclose(enlarged.mean((2, 3)), digits.mean(1, keepdim=True) * 2 - 1, atol=0.05)
    small = to_model_input(torch.ones(1, 7 * 7), (1, 7, 7), 16)[0, 0]   # 7 -> 14 (x2), padded by 1
    assert torch.allclose(small[1:15, 1:15], torch.ones(14, 14)) and (small[0] == -1).all()


def test_saved_unet_loads_back_with_its_scheduler(tmp_path):
    torch.manual_seed(0)
    unet = load_unet(TINY_UNET)
    save_unet(unet, build_scheduler(500, "squaredcos_cap_v2"), str(tmp_path / "model"))
    loaded = load_unet(str(tmp_path / "model"))
    scheduler = build_scheduler(source=str(tmp_path / "model"))
    assert scheduler.config.num_train_timesteps == 500   # the saved schedule, not the default
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 400])
    with torch.no_grad():
        assert torch.allclose(unet(x, t).sample, loaded(x, t).sample, atol=1e-6)
    assert not list(tmp_path.glob(".unet-*"))   # staged under a temp name, renamed into place


def test_denoising_loss_trains_a_tiny_unet():
    torch.manual_seed(0)
    model = build_denoiser({"unet": TINY_UNET, "image_shape": (1, 6, 6), "ema_decay": 0.9})
    pixels = torch.from_numpy(np.tile(np.eye(6, dtype=np.float32).reshape(1, 36), (64, 1)))
    optimizer = torch.optim.Adam(model.parameter_groups(3e-3, 0.0), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, terms = model.training_step(pixels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.update_teacher()
        losses.append(terms["loss"])
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    ema, live = next(model.ema.module.parameters()), next(model.unet.parameters())
    assert not torch.equal(ema, live)   # the EMA copy trails the live weights
    assert all(not p.requires_grad for p in model.ema.parameters())


def test_held_out_loss_is_the_ema_unets_loss_at_fixed_noise():
    torch.manual_seed(0)
    model = build_denoiser({"unet": TINY_UNET, "image_shape": (1, 6, 6)})
    rows = torch.rand(10, 36)
    first = model.held_out_loss(rows, batch_size=4)
    assert first == model.held_out_loss(rows, batch_size=4) and np.isfinite(first)   # same draws every call
    with torch.no_grad():
        next(model.ema.module.parameters()).add_(1.0)    # the EMA copy is what is scored, not the live UNet
    assert model.held_out_loss(rows, batch_size=4) != first


def test_loss_at_fixed_noise_matches_the_definition():
    torch.manual_seed(0)
    unet, scheduler = load_unet(TINY_UNET), build_scheduler()
    images = torch.rand(3, 1, 8, 8) * 2 - 1
    generator = torch.Generator().manual_seed(5)
    loss = denoising_loss(unet, scheduler, images, generator)
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(images.shape, generator=generator)
    steps = torch.randint(0, 1000, (3,), generator=generator)
    expected = torch.nn.functional.mse_loss(unet(scheduler.add_noise(images, noise, steps), steps).sample, noise)
    assert torch.allclose(loss, expected)


@pytest.mark.slow
def test_pretraining_on_ray_train_saves_a_loadable_ema_unet(ray_local, tmp_path):
    from raycluster.config import TrainConfig
    from raycluster.diffusion.pretrain import pretrain_unet

    pixels = np.random.default_rng(0).random((64, 36)).astype(np.float32)
    summary = pretrain_unet(pixels, (1, 6, 6), str(tmp_path / "pretrained"), unet={**TINY_UNET},
                            optim={"epochs": 2, "batch_size": 32}, train=TrainConfig(num_workers=2, cpus_per_worker=0.5),
                            storage_path=str(tmp_path / "ckpt"))
    assert summary["epochs"] == 2 and np.isfinite(summary["final_loss"])
    unet = load_unet(str(tmp_path / "pretrained"))
    assert unet.config.sample_size == 8
    with pytest.raises(ValueError, match="do not match image_shape"):
        pretrain_unet(pixels, (1, 7, 7), str(tmp_path / "bad"))

    # A held-out stop: tolerance 0.99 calls any window a plateau, so it stops after 2 steps + one window,
    # long before the cap of 100 steps (54 training rows, batch 32: 2 steps an epoch); the rerun trains no more.
    stop = {"every_steps": 2, "window_steps": 4, "tolerance": 0.99, "held_out_rows": 6}
    kwargs = dict(unet={**TINY_UNET}, optim={"epochs": None, "steps": 100, "batch_size": 32, "stop": stop},
                  storage_path=str(tmp_path / "ckpt"), run_name="stopped")
    stopped = pretrain_unet(pixels, (1, 6, 6), str(tmp_path / "stopped"), **kwargs)
    assert stopped["stopped_at_step"] == stopped["steps"] == 6 and np.isfinite(stopped["held_out_loss"])
    assert pretrain_unet(pixels, (1, 6, 6), str(tmp_path / "stopped"), **kwargs)["steps"] == 6


def test_kept_variance_says_how_much_a_downscale_blurs_and_warns_when_most_is_lost(caplog):
    from raycluster.diffusion.unet import check_input_resolution, kept_variance

    grid = torch.arange(28.0)
    smooth = torch.stack([torch.sin(grid / 9 + phase)[:, None] * torch.cos(grid / 9)[None] for phase in range(20)])
    fine = torch.stack([((grid[:, None] + grid[None] + shift) % 2) * 2 - 1 for shift in range(20)])   # checkerboards
    assert kept_variance(smooth[:, None], 16) > 0.9 > 0.5 > kept_variance(fine[:, None], 14)
    assert kept_variance(fine[:, None], 28) == 1.0 and kept_variance(torch.rand(4, 1, 8, 8), 16) == 1.0
    with caplog.at_level("WARNING"):
        kept = check_input_resolution((fine.flatten(1) + 1) / 2, (1, 28, 28), 14, "diec", "method.x=32")
    assert kept < 0.5 and "keep" in caplog.text and "diec" in caplog.text and "(method.x=32)" in caplog.text
