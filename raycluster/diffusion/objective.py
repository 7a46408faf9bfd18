"""The denoising objective and the pretraining model for the shared training loop (pure torch)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional

import torch


def noise_and_timesteps(latents: torch.Tensor, num_train_timesteps: int,
                        generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise shaped like `latents` and uniform timesteps (B,) int64, on latents' device. A CPU
    `generator` fixes them (drawn on the CPU, then moved: the same draws on any device); None draws
    afresh on the device."""
    if generator is None:
        return torch.randn_like(latents), torch.randint(0, num_train_timesteps, (len(latents),), device=latents.device)
    noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype).to(latents.device)
    return noise, torch.randint(0, num_train_timesteps, (len(latents),), generator=generator).to(latents.device)


def denoising_loss(unet, scheduler, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """DDPM's simple loss: MSE between the noise and the UNet's prediction of it at uniform t.
    images: (B, C, S, S) float in [-1, 1]; returns a scalar. Assumes epsilon prediction."""
    noise, steps = noise_and_timesteps(images, scheduler.config.num_train_timesteps, generator)
    prediction = unet(scheduler.add_noise(images, noise, steps), steps).sample
    return torch.nn.functional.mse_loss(prediction.float(), noise.float())


@dataclass
class DenoiserConfig:
    unet: dict = field(default_factory=dict)   # UNet2DModel config (random init)
    image_shape: tuple = (1, 28, 28)           # (C, H, W) of the stored pixel rows
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    ema_decay: float = 0.999                   # the saved UNet is the EMA copy (DDPM practice)


class DiffusionPretraining(torch.nn.Module):
    """A UNet trained by `denoising_loss` on pixel rows, with an EMA copy of its weights.
    Implements the model contract of `raycluster.train.loop` (training_step,
    parameter_groups, update_teacher); `ema.module` is the UNet to save."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        from raycluster.diffusion.unet import build_scheduler, load_unet

        self.config = config
        self.unet = load_unet(config.unet)
        self.scheduler = build_scheduler(config.num_train_timesteps, config.beta_schedule)
        self.ema = AveragedModel(copy.deepcopy(self.unet), multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        self.ema.requires_grad_(False)

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return [{"params": list(self.unet.parameters()), "weight_decay": weight_decay}]

    def training_step(self, pixels: torch.Tensor):
        from raycluster.diffusion.unet import to_model_input

        self.unet.train()
        images = to_model_input(pixels, self.config.image_shape, self.unet.config.sample_size)
        loss = denoising_loss(self.unet, self.scheduler, images)
        return loss, {"loss": loss.item()}

    def update_teacher(self) -> None:
        self.ema.update_parameters(self.unet)

    @torch.no_grad()
    def held_out_loss(self, pixels: torch.Tensor, draws: int = 4, batch_size: int = 1024) -> float:
        """The EMA UNet's `denoising_loss` on pixel rows (M, C*H*W) it is not trained on, averaged
        over `draws` noise draws per row; the same draws at every call, so calls compare weights."""
        from raycluster.diffusion.unet import to_model_input

        unet, generator, total = self.ema.module, torch.Generator().manual_seed(1234), 0.0
        unet.eval()
        for _ in range(draws):
            for start in range(0, len(pixels), batch_size):
                images = to_model_input(pixels[start:start + batch_size], self.config.image_shape,
                                        self.unet.config.sample_size)
                total += denoising_loss(unet, self.scheduler, images, generator).item() * len(images)
        return total / (draws * len(pixels))


def build_denoiser(config: dict) -> DiffusionPretraining:
    from raycluster.config import check_keys

    known = check_keys(DenoiserConfig, config, "denoiser")
    known["image_shape"] = tuple(known.get("image_shape", (1, 28, 28)))
    return DiffusionPretraining(DenoiserConfig(**known))
