"""raycluster.methods.dific.model (pure torch), the pretrained-mode loader, and DiFiC on Ray Train."""
import json
import os

import numpy as np
import pytest
import torch

from raycluster.methods.dific.model import (attention_mask_from_maps, balance, build_dific, image_space_weights,
                                      masked_denoising_error, neighbor_consistency)

from tests.test_diec import tiny_patterns

TINY_CONDITIONAL_UNET = dict(sample_size=8, block_out_channels=[8, 16], norm_num_groups=4, attention_head_dim=4,
                             down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                             up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"])
TINY_TEXT_ENCODER = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2)
TINY_EXTRACTOR = dict(name="test_efficientnet", pretrained=False)


def scratch_config(**overrides):
    return {"n_clusters": 3, "image_shape": (1, 6, 6), "unet": TINY_CONDITIONAL_UNET, "text_encoder": TINY_TEXT_ENCODER,
            "extractor": TINY_EXTRACTOR, "mask_start_epoch": 0, **overrides}


def test_guidance_loss_is_lower_for_neighbour_consistent_assignments():
    torch.manual_seed(0)
    anchors = torch.softmax(torch.randn(64, 5) * 3, dim=1)
    consistent = neighbor_consistency(anchors, anchors)
    inconsistent = neighbor_consistency(anchors, anchors.roll(1, dims=1))
    assert consistent < inconsistent
    spread = torch.eye(5).repeat(4, 1)                       # every cluster used equally
    collapsed = torch.zeros(20, 5).index_fill_(1, torch.tensor([0]), 1.0)
    assert balance(spread) == pytest.approx(-np.log(5), abs=1e-5) and balance(collapsed) > balance(spread) + 1


def test_mask_is_in_unit_range_and_peaks_where_the_attention_does():
    maps = [torch.zeros(2, 16), torch.zeros(2, 64)]           # two layers: 4x4 and 8x8
    maps[0][0, 0], maps[1][0, 0] = 1.0, 1.0                   # image 0: top-left
    maps[0][1, 15], maps[1][1, 63] = 1.0, 1.0                 # image 1: bottom-right
    mask = attention_mask_from_maps(maps, size=8, threshold=0.3)
    assert mask.shape == (2, 1, 8, 8) and mask.min() >= 0 and mask.max() <= 1
    assert mask[0, 0, 0, 0] == 1 and mask[0, 0, 7, 7] == 0
    assert mask[1, 0, 7, 7] == 1 and mask[1, 0, 0, 0] == 0


def test_masked_error_ignores_the_background_and_is_not_cheaper_for_a_smaller_mask():
    noise, prediction = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    prediction[..., 0, 0] = 2.0                               # an error only in one background pixel
    mask = torch.ones(1, 1, 4, 4)
    mask[..., 0, 0] = 0.0
    assert masked_denoising_error(noise, prediction, mask) == 0
    assert masked_denoising_error(noise, prediction, None) == pytest.approx(4 / 16)
    half = mask * 0.5
    assert torch.allclose(masked_denoising_error(noise, prediction + 1, half),
                          masked_denoising_error(noise, prediction + 1, mask))


def test_image_space_weights_grow_with_noise_up_to_the_clamp():
    from diffusers import DDPMScheduler

    abar = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    steps = torch.tensor([10, 300, 600, 999])
    weights = image_space_weights(abar, steps, max_weight=5.0)
    raw = (1 - abar[steps]) / abar[steps]
    assert weights[0] < weights[1] < weights[2] == weights[3]          # the last two are clamped
    assert torch.allclose(weights / weights[0], raw.clamp(max=5.0) / raw[0]) and weights.mean() == pytest.approx(1)


def test_recorded_masks_follow_the_proxy_tokens_attention():
    """The recorder's maps equal softmax(q k^T / sqrt(d)) on the proxy token, computed here
    independently from the layers' own q and k projections; the mask is those maps, normalised."""
    torch.manual_seed(0)
    model = build_dific(scratch_config()).eval()
    pixels = torch.from_numpy(tiny_patterns(4)[0])
    images = model.images(pixels)
    context = model.condition(model.proxy_words(images)).detach()
    captured = {}
    layers = {name: module for name, module in model.unet.named_modules() if name.endswith("attn2")}
    handles = [module.to_q.register_forward_hook(lambda m, i, o, n=name: captured.__setitem__((n, "q"), o))
               for name, module in layers.items()]
    handles += [module.to_k.register_forward_hook(lambda m, i, o, n=name: captured.__setitem__((n, "k"), o))
                for name, module in layers.items()]
    mask = model.object_masks(images, context)
    for handle in handles:
        handle.remove()
    expected = []
    forward_order = list(dict.fromkeys(name for name, _ in captured))   # dicts keep insertion order
    for name in forward_order:
        attn = layers[name]
        q, k = captured[(name, "q")][:len(images)], captured[(name, "k")][:len(images)]
        heads = attn.heads
        q = q.reshape(len(q), q.shape[1], heads, -1).transpose(1, 2)
        k = k.reshape(len(k), k.shape[1], heads, -1).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        expected.append(probs[..., model.placeholder_position].mean(1))
    assert len(model.recorded) == len(expected) == 4   # cross-attention in down_1, mid, and twice in up_0
    for recorded, manual in zip(model.recorded, expected):
        assert torch.allclose(recorded, manual, atol=1e-5)
    assert torch.allclose(mask, attention_mask_from_maps(expected, 8, model.config.mask_threshold), atol=1e-5)
    assert mask.shape == (len(images), 1, 8, 8) and mask.min() >= 0 and mask.max() <= 1


def test_mask_pass_stops_after_the_last_cross_attention_and_leaves_training_forwards_whole():
    torch.manual_seed(0)
    model = build_dific(scratch_config()).eval()
    images = model.images(torch.from_numpy(tiny_patterns(4)[0]))
    context = model.condition(model.proxy_words(images)).detach()
    calls = []
    handle = model.unet.conv_out.register_forward_hook(lambda *args: calls.append(1))
    model.object_masks(images, context)
    assert calls == [] and len(model.recorded) == len(model.recorders)   # all maps, no output layer
    model.denoising(images, context, None)
    handle.remove()
    assert calls == [1] and all(not r.active and r.stop_at is None for r in model.recorders.values())


def test_held_out_loss_is_repeatable_unmasked_and_reads_each_rows_own_word():
    torch.manual_seed(0)
    model = build_dific(scratch_config(mask_threshold=0.5))
    rows = torch.from_numpy(tiny_patterns(10)[0])
    first = model.held_out_loss(rows, batch_size=4)
    assert first == model.held_out_loss(rows, batch_size=4) and np.isfinite(first)   # same draws every call
    model.config.mask_threshold = 0.9
    assert model.held_out_loss(rows, batch_size=4) == first                          # no mask in it
    with torch.no_grad():   # a different S* for the same images changes what the UNet is told
        model.extractor.to_word.weight.mul_(-3.0)
    assert model.held_out_loss(rows, batch_size=4) != first
    model.training_step(rows)
    assert model.training                                       # a training step after it trains again


def test_guidance_step_trains_extractor_head_and_scratch_diffusion_model():
    torch.manual_seed(0)
    pixels, _ = tiny_patterns()
    centers = np.random.default_rng(0).normal(size=(3, 16)).tolist()
    model = build_dific(scratch_config(guidance=True, centers=centers))
    table = np.stack([np.roll(np.arange(len(pixels)), -s) for s in (1, 2)], axis=1)
    model.attach_context(bank=pixels, neighbors=table)
    loss, terms = model.training_step(torch.from_numpy(pixels[:16]), torch.arange(16))
    loss.backward()
    assert set(terms) >= {"diffusion", "consistency", "balance", "teacher_clusters"} and 0 < terms["mask_mean"] <= 1
    assert model.prototypes.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.extractor.parameters() if p.requires_grad)
    assert model.unet.conv_in.weight.grad.abs().sum() > 0    # from scratch: the UNet trains too
    cluster, confidence = model.predict(torch.from_numpy(pixels))
    assert cluster.shape == (120,) and ((confidence > 0) & (confidence <= 1)).all()


def test_wrong_prompt_or_centres_is_one_clear_error():
    with pytest.raises(ValueError, match="needs a '{}'"):
        build_dific(scratch_config(prompt="a photo"))
    with pytest.raises(ValueError, match=r"dific model: unknown setting\(s\) \['mask_treshold'\]"):
        build_dific(scratch_config(mask_treshold=0.5))
    with pytest.raises(ValueError, match="3 x 16 initial centres"):
        build_dific(scratch_config(guidance=True, centers=[[0.0] * 16] * 2))


def test_a_typo_in_the_manifold_settings_fails_before_any_training():
    from raycluster.methods.dific.method import DiFiC

    with pytest.raises(ValueError, match=r"unknown manifold setting\(s\) \['n_component'\]"):
        DiFiC(10, manifold={"n_component": 10})
    assert DiFiC(10, manifold={"n_components": 5, "max_points": 1000}).manifold["n_components"] == 5
    with pytest.raises(ValueError, match="the warm-up's is warmup.stop"):   # guidance has no held-out watch
        DiFiC(10, optim={"epochs": 2, "stop": {"every_steps": 5}})


# -- pretrained mode: a Stable-Diffusion-layout pipeline the test saves itself -------------
CLIP_WORDS = ["a", "photo", "of", "*"]


def tiny_clip_tokenizer(directory):
    """A CLIPTokenizer whose BPE knows exactly the prompt's words (vocab.json + merges.txt)."""
    from transformers import CLIPTokenizer

    os.makedirs(directory, exist_ok=True)
    letters = sorted({c for w in CLIP_WORDS for c in w})
    vocab = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    merges = ["p h", "ph o", "pho t", "phot o</w>", "o f</w>"]
    vocab += ["ph", "pho", "phot", "photo</w>", "of</w>"]
    with open(os.path.join(directory, "vocab.json"), "w") as handle:
        json.dump({token: i for i, token in enumerate(vocab)}, handle)
    with open(os.path.join(directory, "merges.txt"), "w") as handle:
        handle.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt"))


def save_tiny_pipeline(path):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer(os.path.join(str(path), "_tokenizer_src"))
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1))
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        sample_size=8)
    unet = UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                norm_num_groups=4, attention_head_dim=4, cross_attention_dim=16, layers_per_block=1,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=DDPMScheduler(steps_offset=1, clip_sample=False), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(str(path))
    return unet


def test_pretrained_mode_loads_a_saved_pipeline_and_trains_only_the_extractor(tmp_path):
    saved_unet = save_tiny_pipeline(tmp_path / "sd")
    model = build_dific({"n_clusters": 3, "pretrained": str(tmp_path / "sd"), "image_shape": (3, 6, 6),
                         "image_size": 8, "extractor": TINY_EXTRACTOR, "mask_start_epoch": 0})
    assert model.frozen and model.vae is not None
    assert torch.equal(model.unet.conv_in.weight, saved_unet.conv_in.weight)   # the saved weights, not a fresh init
    assert model.placeholder_position == 5   # <start> a photo of a * <end>: each word one BPE token
    pixels = torch.rand(4, 3 * 6 * 6)
    loss, terms = model.training_step(pixels)
    loss.backward()
    # S* gets gradients through the frozen text encoder and UNet; nothing frozen is trained
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.extractor.to_word.parameters())
    assert all(not p.requires_grad and p.grad is None for part in (model.unet, model.text_encoder, model.vae)
               for p in part.parameters())
    names = {id(p) for group in model.parameter_groups(1e-3, 0.0) for p in group["params"]}
    assert names == {id(p) for p in model.extractor.parameters()}
    assert model.masks(pixels).shape == (4, 6, 6)             # from latent space back onto the image grid


# -- on Ray ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_worker_warmup_decreases_the_loss_and_resumes(ray_local, tmp_path):
    from raycluster.config import TrainConfig
    from raycluster.methods.dific.model import build_dific as factory
    from raycluster.train.loop import OptimConfig
    from raycluster.train.run import fit_with_ray_train

    pixels, labels = tiny_patterns()
    optim = OptimConfig(epochs=2, batch_size=40, lr=3e-3, min_lr=3e-3, warmup_epochs=0, weight_decay=0.0)
    workers = TrainConfig(num_workers=2, cpus_per_worker=0.5)
    config = scratch_config(mask_start_epoch=-1)
    first = fit_with_ray_train(factory, config, pixels, optim, workers, False, str(tmp_path), "warmup", labels=labels)
    assert first["epoch"] == 1
    optim.epochs = 8
    resumed = fit_with_ray_train(factory, config, pixels, optim, workers, False, str(tmp_path), "warmup", labels=labels)
    assert resumed["metrics"]["resumed_from_epoch"] == 2
    assert resumed["metrics"]["train/loss"] < first["metrics"]["train/loss"]


DIGITS_DIFIC = ["method=dific", "data.source.limit=300", "method.image_shape=[1,8,8]", "method.model.image_size=null",
                "++method.model.unet={sample_size:8,block_out_channels:[8,16],norm_num_groups:4,attention_head_dim:4,"
                "down_block_types:[DownBlock2D,CrossAttnDownBlock2D],up_block_types:[CrossAttnUpBlock2D,UpBlock2D]}",
                "++method.model.text_encoder={hidden_size:16,intermediate_size:32,num_attention_heads:2}",
                "method.model.extractor.name=test_efficientnet", "method.model.mask_start_epoch=1",
                "method.warmup.steps=30", "method.warmup.batch_size=100", "method.optim.epochs=2",
                "method.warmup.stop={every_steps:3,window_steps:3,tolerance:0.99,held_out_rows:30}",
                "method.optim.batch_size=100", "cluster.train.cpus_per_worker=0.5", "method.mask_examples=4"]


@pytest.mark.slow
def test_train_job_outputs_the_warmup_clusters_then_guides_them_reusing_the_warmup(ray_local, compose_config, tmp_path):
    """The default (output=start): warm-up, then its clusters are the output, assigned by S*'s vote
    (a saved method predicts the same); output=finetuned reruns only the guidance stage."""
    import pyarrow.parquet as pq

    from raycluster.data.store import EmbeddingStore
    from raycluster.methods.saving import load_fitted
    from raycluster.app.pipeline import run_train

    cfg = compose_config(DIGITS_DIFIC)
    summary = run_train(cfg)
    stages = summary["method_stages"]
    # 270 rows trained on (30 held out), 3 steps an epoch: tolerance 0.99 stops at the first full window, step 6 of 30
    assert stages["warmup_epochs_run"] == 2 and stages["warmup_stopped_at_step"] == 6 == stages["warmup_steps"]
    assert np.isfinite(stages["warmup_held_out_loss"])
    assert stages["input_kept_variance"] == 1.0   # 8x8 images at 8 px: nothing downscaled
    assert "warmup_seconds" in stages and "guidance_seconds" not in stages and set(stages["init_kmeans"]) >= {"acc", "nmi"}
    assert set(stages["init_manifold"]) >= {"acc", "nmi"}    # the default config clusters a UMAP of S*
    assert 0 <= stages["knn_label_agreement"] <= 1 and os.path.getsize(stages["masks_png"]) > 1000
    assert summary["samples"] == 300 and 0 <= summary["metrics"]["acc"] <= 1
    # every fitted row is in UMAP's sample, so the output is the warm-up clusters themselves
    assert summary["metrics"]["acc"] == pytest.approx(stages["init_manifold"]["acc"], abs=1e-4)
    written = pq.read_table(summary["outputs"]["assignments"]).column("cluster").to_numpy()
    vectors = EmbeddingStore(cfg.embeddings_path).load().vectors
    assert (load_fitted(summary["outputs"]["method"]).predict(vectors)[0] == written).all()
    rerun = run_train(compose_config(DIGITS_DIFIC + ["method.output=finetuned", "method.optim.epochs=3"]))
    assert "warmup_seconds" not in rerun["method_stages"]   # the warm-up model was reused
    assert rerun["method_stages"]["guidance_seconds"] > 0
    written = pq.read_table(rerun["outputs"]["assignments"]).column("cluster").to_numpy()
    assert (load_fitted(rerun["outputs"]["method"]).predict(vectors)[0] == written).all()


def test_extractor_loads_a_local_checkpoint_and_normalises_like_its_network(tmp_path):
    import timm

    from raycluster.methods.dific.model import SemanticExtractor

    torch.manual_seed(0)
    source = timm.create_model("test_efficientnet", pretrained=False, num_classes=0, in_chans=3)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    extractor = SemanticExtractor({"name": "test_efficientnet", "checkpoint_path": str(tmp_path / "weights.pth"),
                                   "image_size": 32}, in_channels=3, word_dim=16)
    assert all(torch.equal(a, b) for a, b in zip(extractor.backbone.state_dict().values(), source.state_dict().values()))
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    resized = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear")
    expected = extractor.to_word(source.eval()(((resized + 1) / 2 - extractor.mean) / extractor.std))
    assert torch.allclose(extractor.eval()(images), expected, atol=1e-5)    # resized to 32, then normalised
    assert not torch.allclose(extractor.mean, torch.zeros(1))               # by the network's own statistics
