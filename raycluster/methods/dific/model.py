"""DiFiC ("Your Diffusion Model Holds the Secret to Fine-Grained Clustering", Yang, Hu, Peng,
Liu, Li, arXiv 2412.18838): pure torch pieces. `dific_method.py` puts them behind the method
interface and runs them on Ray Train.

Semantic distillation (an extractor maps an image to a proxy-word embedding S* that conditions
a text-to-image UNet; the denoising loss trains it), object concentration (masks from the proxy
token's cross-attention weight the loss) and cluster guidance (a cosine-prototype head with
neighbour consistency + balance). Every value, why it was chosen and what it was measured at:
docs/methods/dific.md."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from raycluster.diffusion.objective import noise_and_timesteps
from raycluster.train.loop import shared_tensor

# from-scratch defaults for 28-32 px grayscale images (MNIST); YAML overrides them key by key
SMALL_CONDITIONAL_UNET = dict(sample_size=32, in_channels=1, out_channels=1, layers_per_block=1,
                              block_out_channels=(32, 64, 64), norm_num_groups=8, attention_head_dim=8,
                              down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                              up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
SMALL_TEXT_ENCODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                          max_position_embeddings=16)
SMALL_EXTRACTOR = dict(name="resnet10t", pretrained=False)


# -- the prompt -----------------------------------------------------------------------------
class WordTokenizer:
    """From-scratch mode's tokenizer: one id per word of the prompt template, plus start/end.
    Pretrained mode uses the pipeline's own CLIPTokenizer instead; both give
    `prompt_ids(...) -> (input_ids (1, L) int64, placeholder position)`."""

    def __init__(self, words: list[str]):
        self.vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
        for word in words:
            self.vocab.setdefault(word, len(self.vocab))

    def ids(self, text: str) -> list[int]:
        return [0] + [self.vocab[word] for word in text.split()] + [1]


def prompt_ids(tokenizer, prompt: str, placeholder: str) -> tuple[torch.Tensor, int]:
    """Token ids of `prompt` with `{}` filled by `placeholder` (a word the tokenizer knows as one
    token), and the placeholder's position, whose input embedding S* will replace."""
    if "{}" not in prompt:
        raise ValueError(f"dific: the prompt {prompt!r} needs a '{{}}' where the proxy word goes")
    text = prompt.format(placeholder)
    if isinstance(tokenizer, WordTokenizer):
        ids = tokenizer.ids(text)
        placeholder_id = tokenizer.vocab[placeholder]
    else:
        ids = tokenizer(text).input_ids
        placeholder_ids = tokenizer(placeholder, add_special_tokens=False).input_ids
        if len(placeholder_ids) != 1:
            raise ValueError(f"dific: placeholder {placeholder!r} is {len(placeholder_ids)} tokens for this tokenizer; "
                             "pick a word that is one token")
        placeholder_id = placeholder_ids[0]
    return torch.tensor([ids]), ids.index(placeholder_id)


@contextmanager
def proxy_word(text_encoder, position: int, word_embeddings: torch.Tensor):
    """Within the block, the text encoder's token embedding at `position` is `word_embeddings`
    (B, word_dim), one S* per image (input_ids must then be (B, L)). Gradients reach S*."""
    def replace(module, inputs, output):
        output = output.clone()
        output[:, position] = word_embeddings.to(output.dtype)
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


# -- cross-attention masks --------------------------------------------------------------------
class AllMapsRecorded(Exception):
    """Raised by the recorder that completes a mask pass's maps: the layers after the last
    cross-attention cannot change them, so the pass stops there."""


class ProxyAttentionRecorder:
    """A diffusers attention processor for cross-attention layers that records, when `active`,
    each layer's attention probabilities on token `position` (B, H*W), averaged over heads, then
    lets the library's default processor compute the output (so nothing else changes).
    With `stop_at` set, the recorder whose map makes `recorded` that long raises AllMapsRecorded
    (a mask pass needs no UNet output: from scratch on MNIST the up blocks after the last
    cross-attention are ~57% of the pass, and the full pass ~a fifth of a training step)."""

    def __init__(self, position: int, recorded: list):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.position, self.recorded, self.active, self.stop_at = position, recorded, False, None
        self.inner = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if self.active and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))
            key = attn.head_to_batch_dim(attn.to_k(context))
            probs = attn.get_attention_scores(query, key, None)              # (B*heads, HW, L)
            self.recorded.append(probs[:, :, self.position].reshape(len(hidden_states), attn.heads, -1).mean(1))
            if self.stop_at is not None and len(self.recorded) >= self.stop_at:
                raise AllMapsRecorded
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


def attention_mask_from_maps(maps: list[torch.Tensor], size: int, threshold: float) -> torch.Tensor:
    """Per-layer proxy-token attention maps [(B, h_l*w_l)] -> soft object mask (B, 1, size, size)
    in [0, 1]: each map upsampled to size x size, averaged, min-max normalised per image, then
    clamp((a - threshold) / (1 - threshold), 0, 1)."""
    upsampled = []
    for flat in maps:
        side = int(round(flat.shape[1] ** 0.5))
        upsampled.append(F.interpolate(flat.float().reshape(-1, 1, side, side), size=(size, size), mode="bilinear",
                                       align_corners=False))
    average = torch.stack(upsampled).mean(0)
    low = average.amin(dim=(2, 3), keepdim=True)
    high = average.amax(dim=(2, 3), keepdim=True)
    normalised = (average - low) / (high - low).clamp_min(1e-8)
    return ((normalised - threshold) / (1 - threshold)).clamp(0, 1)


def masked_denoising_error(noise: torch.Tensor, prediction: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-image mean squared epsilon error: noise, prediction (B, C, S, S), mask (B, 1, S, S)
    or None -> (B,), each image's error weighted by its mask and normalised by the mask's mass."""
    error = (prediction.float() - noise.float()).pow(2)
    if mask is None:
        return error.flatten(1).mean(1)
    weight = mask.expand_as(error)
    return (error * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1e-6)


def image_space_weights(alphas_cumprod: torch.Tensor, steps: torch.Tensor, max_weight: float) -> torch.Tensor:
    """(B,) weights turning epsilon errors into errors on the predicted clean image:
    |x0 - x0_hat|^2 = (1 - abar_t) / abar_t |eps - eps_hat|^2, clamped at `max_weight` (the
    factor grows without bound as t -> T); normalised to mean 1 over the batch."""
    abar = alphas_cumprod.to(steps.device)[steps].float()
    weights = ((1 - abar) / abar).clamp(max=max_weight)
    return weights / weights.mean()


# -- cluster guidance -------------------------------------------------------------------------
def cosine_head_logits(words: torch.Tensor, prototypes: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, word_dim) S*, (K, word_dim) prototypes -> (B, K) logits <S*/|S*|, c_k/|c_k|> / temperature
    of the clustering head (float32)."""
    return F.normalize(words.float(), dim=1) @ F.normalize(prototypes.float(), dim=1).T / temperature


def neighbor_consistency(anchor_probs: torch.Tensor, neighbor_probs: torch.Tensor) -> torch.Tensor:
    """-mean log <p_i, p_j> over (anchor, neighbour) pairs; both (B, K) rows summing to 1."""
    return -torch.log((anchor_probs * neighbor_probs).sum(1).clamp_min(1e-8)).mean()


def balance(probs: torch.Tensor) -> torch.Tensor:
    """-H(mean_i p_i): lowest (-log K) when the batch spreads evenly over the K clusters."""
    mean = probs.mean(0).clamp_min(1e-8)
    return (mean * torch.log(mean)).sum()


@dataclass
class DiFiCConfig:
    n_clusters: int = 10
    image_shape: tuple = (1, 28, 28)          # (C, H, W) of the pixel rows fed to fit/predict
    pretrained: Optional[str] = None          # Stable Diffusion folder / hub name: pretrained mode
    unet: dict = field(default_factory=dict)          # from-scratch: overrides of SMALL_CONDITIONAL_UNET
    text_encoder: dict = field(default_factory=dict)  # from-scratch: overrides of SMALL_TEXT_ENCODER
    extractor: dict = field(default_factory=dict)     # timm: name, pretrained, checkpoint_path, image_size
    image_size: Optional[int] = None          # images resized to this first (pretrained: the VAE's input)
    prompt: str = "a photo of a {}"
    placeholder: str = "*"                    # a one-token word in the prompt; its embedding becomes S*
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    image_space_max_weight: float = 5.0       # loss on predicted images, weight clamp (0: plain epsilon loss)
    mask_timestep: int = 300
    mask_threshold: float = 0.0              # > 0 zeroes the weakest part of the attention: docs/methods/dific.md
    mask_start_epoch: int = 2                 # object concentration from this epoch (-1: never)
    guidance: bool = False                    # train the clustering head (the guidance stage)
    centers: list = field(default_factory=list)   # (K, word_dim) centres of the warm-up clusters of S*
    head_temperature: float = 0.1
    neighbor_weight: float = 1.0
    balance_weight: float = 5.0
    mixed_precision: bool = True              # bf16 autocast on CUDA
    init_from: Optional[str] = None           # state file of a distilled model to start from (guidance)
    predict_batch_size: int = 500

    @property
    def feature_dim(self) -> int:
        channels, height, width = self.image_shape
        return channels * height * width


def load_components(config: DiFiCConfig) -> dict:
    """unet, text_encoder, tokenizer, scheduler, vae (None in pixel space) and `frozen`.
    Pretrained: every component from the Stable-Diffusion-layout folder or hub name (subfolders
    unet/ text_encoder/ tokenizer/ scheduler/ vae/), frozen. From scratch: built from config."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if config.pretrained:
        from diffusers import AutoencoderKL
        from transformers import CLIPTokenizer

        source = config.pretrained
        kwargs = dict(low_cpu_mem_usage=False)   # the default needs `accelerate`
        components = dict(unet=UNet2DConditionModel.from_pretrained(source, subfolder="unet", **kwargs),
                          text_encoder=CLIPTextModel.from_pretrained(source, subfolder="text_encoder"),
                          tokenizer=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
                          scheduler=DDPMScheduler.from_pretrained(source, subfolder="scheduler"),
                          vae=AutoencoderKL.from_pretrained(source, subfolder="vae", **kwargs), frozen=True)
        for part in ("unet", "text_encoder", "vae"):
            components[part].requires_grad_(False)
        return components
    words = config.prompt.format(config.placeholder).split()
    tokenizer = WordTokenizer(words)
    text_config = {**SMALL_TEXT_ENCODER, **config.text_encoder}
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer.vocab), bos_token_id=0, eos_token_id=1,
                                                pad_token_id=1, **text_config))
    unet_config = {**SMALL_CONDITIONAL_UNET, "in_channels": config.image_shape[0], "out_channels": config.image_shape[0],
                   **config.unet, "cross_attention_dim": text_config["hidden_size"]}
    unet = UNet2DConditionModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in unet_config.items()})
    scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)
    return dict(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler, vae=None, frozen=False)


class SemanticExtractor(torch.nn.Module):
    """Image -> S*: (B, C, S, S) in [-1, 1] -> (B, word_dim). A timm network (pooled features;
    `pretrained` or a local `checkpoint_path` load its weights, with its own input size and
    normalisation, read from its pretrained config) and a linear map to the word embedding width."""

    def __init__(self, settings: dict, in_channels: int, word_dim: int):
        import timm

        super().__init__()
        settings = {**SMALL_EXTRACTOR, **settings}
        self.pretrained = bool(settings.get("pretrained") or settings.get("checkpoint_path"))
        overlay = {"file": settings["checkpoint_path"]} if settings.get("checkpoint_path") else None
        self.backbone = timm.create_model(settings["name"], pretrained=self.pretrained, num_classes=0,
                                          in_chans=in_channels, pretrained_cfg_overlay=overlay)
        self.to_word = torch.nn.Linear(self.backbone.num_features, word_dim)
        data = self.backbone.pretrained_cfg
        self.input_size = settings.get("image_size") or (data["input_size"][-1] if self.pretrained else None)
        mean, std = data.get("mean", (0.5,) * 3), data.get("std", (0.5,) * 3)
        channels = slice(0, in_channels)
        self.register_buffer("mean", torch.tensor(mean[channels]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std[channels]).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.pretrained:   # the network's own input: its size, [0, 1] normalised by its mean / std
            if self.input_size and images.shape[-1] != self.input_size:
                images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                       align_corners=False)
            images = ((images + 1) / 2 - self.mean) / self.std
        return self.to_word(self.backbone(images))


class DiFiCModel(torch.nn.Module):
    """Extractor -> S* -> prompt -> text encoder -> conditional UNet; optional clustering head.
    `training_step(pixels, row_ids)`: pixels (B, C*H*W) float in [0, 1]; row_ids (B,) global row
    ids, used in guidance to look neighbours up in the context (`attach_context`)."""

    def __init__(self, config: DiFiCConfig):
        super().__init__()
        parts = load_components(config)
        self.config = config
        self.unet, self.text_encoder, self.vae = parts["unet"], parts["text_encoder"], parts["vae"]
        self.scheduler, self.frozen = parts["scheduler"], parts["frozen"]
        input_ids, self.placeholder_position = prompt_ids(parts["tokenizer"], config.prompt, config.placeholder)
        self.register_buffer("input_ids", input_ids, persistent=False)
        word_dim = self.text_encoder.get_input_embeddings().embedding_dim
        self.extractor = SemanticExtractor(config.extractor, config.image_shape[0], word_dim)
        self.recorded: list = []
        self.recorders = {name: ProxyAttentionRecorder(self.placeholder_position, self.recorded)
                          for name in self.unet.attn_processors if name.endswith("attn2.processor")}
        self.unet.set_attn_processor({name: self.recorders.get(name, processor)
                                      for name, processor in self.unet.attn_processors.items()})
        if config.guidance:
            centers = torch.tensor(config.centers, dtype=torch.float32)
            if centers.shape != (config.n_clusters, word_dim):
                raise ValueError(f"dific guidance needs {config.n_clusters} x {word_dim} initial centres, got "
                                 f"{tuple(centers.shape)}")
            self.prototypes = torch.nn.Parameter(centers)
        if config.init_from:   # guidance starts from the warm-up's weights; its head is new
            state = torch.load(config.init_from, map_location="cpu", weights_only=True)["model"]
            missing, unexpected = self.load_state_dict(state, strict=False)
            if unexpected or set(missing) - {"prototypes"}:
                raise ValueError(f"dific: {config.init_from} does not match this model: {len(missing)} weights missing "
                                 f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        self.epoch = 0
        self.bank: Optional[torch.Tensor] = None        # (N, C*H*W) all pixel rows (guidance)
        self.neighbors: Optional[torch.Tensor] = None   # (N, knn) int64 global row ids

    # -- inputs ---------------------------------------------------------------------------
    def images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C*H*W) in [0, 1] -> (B, C, S, S) in [-1, 1]: resized to `image_size` when set (in
        pretrained mode it defaults to the VAE's input size), then, in pixel space, padded with
        the background value to the UNet's sample size."""
        from raycluster.diffusion.unet import pad_to_sample_size

        channels, height, width = self.config.image_shape
        images = pixels.reshape(len(pixels), channels, height, width).float() * 2 - 1
        size = self.config.image_size or (self.vae.config.sample_size if self.vae is not None else None)
        if size and (height, width) != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images if self.vae is not None else pad_to_sample_size(images, self.unet.config.sample_size)

    def latents(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """What the UNet denoises: the images themselves, or the VAE's scaled latents."""
        if self.vae is None:
            return images
        with torch.no_grad():
            return self.vae.encode(images).latent_dist.sample(generator) * self.vae.config.scaling_factor

    # -- the pieces -----------------------------------------------------------------------
    def proxy_words(self, images: torch.Tensor) -> torch.Tensor:
        """S*: (B, C, S, S) -> (B, word_dim)."""
        return self.extractor(images)

    def condition(self, words: torch.Tensor) -> torch.Tensor:
        """The prompt with S* in place -> text encoder hidden states (B, L, hidden)."""
        with proxy_word(self.text_encoder, self.placeholder_position, words):
            return self.text_encoder(self.input_ids.expand(len(words), -1)).last_hidden_state

    @torch.no_grad()
    def object_masks(self, latents: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Soft masks (B, 1, S, S) in [0, 1] from the proxy token's cross-attention at `mask_timestep`
        (fixed noise seed, so a mask is a function of the image and its S*)."""
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
        steps = torch.full((len(latents),), self.config.mask_timestep, device=latents.device, dtype=torch.long)
        self.recorded.clear()
        for recorder in self.recorders.values():
            recorder.active, recorder.stop_at = True, len(self.recorders)
        try:
            self.unet(self.scheduler.add_noise(latents, noise, steps), steps, encoder_hidden_states=context)
        except AllMapsRecorded:   # every cross-attention layer has been recorded: the rest is skipped
            pass
        finally:
            for recorder in self.recorders.values():
                recorder.active, recorder.stop_at = False, None
        if len(self.recorded) != len(self.recorders):
            raise RuntimeError(f"dific: the mask pass recorded {len(self.recorded)} of {len(self.recorders)} "
                               "cross-attention maps")
        return attention_mask_from_maps(self.recorded, latents.shape[-1], self.config.mask_threshold)

    def head_probs(self, words: torch.Tensor) -> torch.Tensor:
        """(B, word_dim) -> (B, K) cluster probabilities of the cosine-prototype head."""
        return torch.softmax(cosine_head_logits(words, self.prototypes, self.config.head_temperature), dim=1)

    def denoising(self, latents: torch.Tensor, context: torch.Tensor, mask: Optional[torch.Tensor],
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The training loss: masked denoising error at uniform t, weighted towards image space; a
        CPU `generator` fixes the noise and timesteps (held-out scoring), None draws them afresh."""
        noise, steps = noise_and_timesteps(latents, self.scheduler.config.num_train_timesteps, generator)
        prediction = self.unet(self.scheduler.add_noise(latents, noise, steps), steps, encoder_hidden_states=context).sample
        errors = masked_denoising_error(noise, prediction, mask)
        if self.config.image_space_max_weight > 0:
            errors = errors * image_space_weights(self.scheduler.alphas_cumprod, steps, self.config.image_space_max_weight)
        return errors.mean()

    # -- the training-loop contract ------------------------------------------------------------
    def attach_context(self, bank, neighbors) -> None:
        """All pixel rows (N, C*H*W) and the k-NN table of the warm-up S* (N, knn)."""
        self.bank = shared_tensor(bank, torch.float32)
        self.neighbors = shared_tensor(neighbors, torch.int64)

    def on_epoch_start(self, features: torch.Tensor, epoch: int) -> None:
        self.epoch = epoch

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict]:
        groups = [{"params": list(self.extractor.parameters()), "weight_decay": weight_decay}]
        if not self.frozen:
            groups.append({"params": list(self.unet.parameters()) + list(self.text_encoder.parameters()),
                           "weight_decay": weight_decay})
        if self.config.guidance:
            groups.append({"params": [self.prototypes], "weight_decay": 0.0})
        return groups

    def training_step(self, pixels: torch.Tensor, row_ids: Optional[torch.Tensor] = None):
        self.train()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16,
                                  enabled=self.config.mixed_precision and pixels.is_cuda)
        with autocast:
            images = self.images(pixels)
            latents = self.latents(images)
            words = self.proxy_words(images)
            context = self.condition(words)
            use_mask = 0 <= self.config.mask_start_epoch <= self.epoch
            mask = self.object_masks(latents, context) if use_mask else None
            loss = diffusion = self.denoising(latents, context, mask)
            terms = {"diffusion": diffusion.item(), "mask_mean": mask.mean().item() if use_mask else 1.0}
            if self.config.guidance:
                if self.neighbors is None:
                    raise RuntimeError("dific guidance needs attach_context(bank, neighbors) before training")
                table = self.neighbors[row_ids.cpu()]
                pick = table.gather(1, torch.randint(0, table.shape[1], (len(table), 1)))[:, 0]
                neighbor_words = self.proxy_words(self.images(self.bank[pick].to(pixels.device)))
                anchor_probs, neighbor_probs = self.head_probs(words), self.head_probs(neighbor_words)
                consistency, spread = neighbor_consistency(anchor_probs, neighbor_probs), balance(anchor_probs)
                loss = loss + self.config.neighbor_weight * consistency + self.config.balance_weight * spread
                terms.update(consistency=consistency.item(), balance=spread.item(),
                             teacher_clusters=anchor_probs.argmax(1).detach())
        terms["loss"] = loss.item()
        return loss, terms

    @torch.no_grad()
    def held_out_loss(self, pixels: torch.Tensor, draws: int = 4, batch_size: int = 512) -> float:
        """The denoising loss on pixel rows (M, C*H*W) it is not trained on, each conditioned on its own
        S*: how much S* of unseen images tells the UNet. Unmasked (the masks move as the attention
        trains), `draws` noise draws per row, the same draws at every call, so calls compare weights."""
        self.eval()
        generator, total = torch.Generator().manual_seed(1234), 0.0
        device = next(self.parameters()).device
        for chunk in pixels.split(batch_size):
            images = self.images(chunk.to(device))
            latents, context = self.latents(images, generator), self.condition(self.proxy_words(images))
            total += sum(self.denoising(latents, context, None, generator).item() for _ in range(draws)) * len(chunk)
        return total / (draws * len(pixels))

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, C*H*W) -> S* (N, word_dim) for all rows, in batches, eval mode."""
        self.eval()
        device = next(self.parameters()).device
        return torch.cat([self.proxy_words(self.images(chunk.to(device))).float().cpu()
                          for chunk in pixels.split(self.config.predict_batch_size)])

    @torch.no_grad()
    def masks(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, C*H*W) -> object masks at `mask_timestep` on the images' own grid (B, H, W) in [0, 1],
        for inspection: the padding (pixel space) cropped away, then resized back."""
        self.eval()
        images = self.images(pixels)
        masks = self.object_masks(self.latents(images), self.condition(self.proxy_words(images)))
        if self.vae is None:   # crop the centred content out of the padded sample
            content = self.config.image_size or self.config.image_shape[1]
            top = (masks.shape[-1] - content) // 2
            masks = masks[..., top:top + content, top:top + content]
        height, width = self.config.image_shape[1:]
        return F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C*H*W) -> (cluster (N,) int64, confidence (N,) float32) from the head."""
        if not self.config.guidance:
            raise RuntimeError("dific: this model has no clustering head yet (distillation only): cluster embed()")
        probs = self.head_probs(self.embed(pixels))
        confidence, cluster = probs.max(dim=1)
        return cluster, confidence.float()


def build_dific(config: dict) -> DiFiCModel:
    from raycluster.config import check_keys

    known = check_keys(DiFiCConfig, config, "dific model")
    known["image_shape"] = tuple(known.get("image_shape", (1, 28, 28)))
    if known.get("pretrained") and os.path.exists(known["pretrained"]):
        known["pretrained"] = os.path.abspath(known["pretrained"])
    return DiFiCModel(DiFiCConfig(**known))
