"""raycluster.features.unet: hooked block activations and the forward noising process."""
import numpy as np
import pytest
import torch

from raycluster.diffusion.unet import build_scheduler, load_unet
from raycluster.features.unet import layer_names, noise_to_timestep, unet_features

TINY_UNET = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                 norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def test_every_layer_gives_one_pooled_vector_of_its_block_width():
    torch.manual_seed(0)
    unet = load_unet(TINY_UNET).eval()
    names = layer_names(unet)
    assert names == ["down_0", "down_1", "mid", "up_0", "up_1"]
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        features = unet_features(unet, build_scheduler(), images, names, timestep=200, draws=3,
                                 generator=torch.Generator().manual_seed(0))
    widths = {"down_0": 8, "down_1": 16, "mid": 16, "up_0": 16, "up_1": 8}
    for name in names:
        assert features[name].shape == (5, widths[name]), name
        assert torch.isfinite(features[name]).all()
    # the down blocks' skip outputs are not what is pooled: the hidden state the next block reads
    assert not torch.allclose(features["down_0"], torch.zeros_like(features["down_0"]))


def test_noising_matches_the_scheduler_forward_process():
    scheduler = build_scheduler(1000, "linear")
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    noised = noise_to_timestep(scheduler, images, 300, torch.Generator().manual_seed(7))
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(7))
    abar = scheduler.alphas_cumprod[300]
    assert torch.allclose(noised, abar.sqrt() * images + (1 - abar).sqrt() * noise, atol=1e-6)
    assert noise_to_timestep(scheduler, images, 0) is images   # t = 0: the clean image


def test_noise_averaging_reduces_the_spread_of_embeddings():
    torch.manual_seed(0)
    unet = load_unet(TINY_UNET).eval()
    scheduler = build_scheduler()
    image = (torch.rand(1, 1, 8, 8) * 2 - 1).repeat(16, 1, 1, 1)   # one image, 16 independent estimates
    with torch.no_grad():
        one = unet_features(unet, scheduler, image, ["mid"], 500, draws=1, generator=torch.Generator().manual_seed(1))
        eight = unet_features(unet, scheduler, image, ["mid"], 500, draws=8, generator=torch.Generator().manual_seed(1))
    assert eight["mid"].std(0).mean() < 0.6 * one["mid"].std(0).mean()


def test_an_unknown_layer_is_one_clear_error():
    unet = load_unet(TINY_UNET)
    with pytest.raises(ValueError, match="unknown UNet layer 'mid_1'.*down_0"):
        unet_features(unet, build_scheduler(), torch.zeros(1, 1, 8, 8), ["mid_1"], 10)


def test_unet_extractor_runs_on_decoded_batches(tmp_path):
    from raycluster.diffusion.unet import save_unet
    from raycluster.features.unet import UNetExtractor

    save_unet(load_unet(TINY_UNET), build_scheduler(), str(tmp_path / "model"))
    extractor = UNetExtractor(unet=str(tmp_path / "model"), layer="up_0", timestep=50, draws=2, channels=1)
    batch = {"pixels": np.random.default_rng(0).integers(0, 255, (3, 1, 6, 6), dtype=np.uint8),
             "ok": np.array([True, False, True])}
    out = extractor(batch)
    assert out["embedding"].shape == (3, 16)
    assert (out["embedding"][1] == 0).all() and (out["embedding"][0] != 0).any()
    assert "NOT meaningful" in UNetExtractor.weights_note(unet=TINY_UNET)


@pytest.mark.slow
def test_unet_backbone_through_the_ray_data_extraction_job(ray_local, compose_config, tmp_path):
    from raycluster.data.store import EmbeddingStore
    from raycluster.diffusion.unet import save_unet
    from raycluster.app.pipeline import ensure_embeddings

    save_unet(load_unet(TINY_UNET), build_scheduler(), str(tmp_path / "model"))
    cfg = compose_config(["data.source.limit=200", "backbone=unet", f"backbone.extractor.unet={tmp_path}/model",
                          "backbone.extractor.layer=down_1", "backbone.extractor.timestep=300",
                          "backbone.extractor.pool=2"])
    _, summary = ensure_embeddings(cfg)
    store = EmbeddingStore(cfg.embeddings_path).load()
    assert store.vectors.shape == (200, 16 * 4) and summary.weights.startswith("diffusion UNet from")
    assert np.isfinite(store.vectors).all() and store.vectors.std(0).mean() > 0
