"""The face model's networks: the diffusers UNet ε_θ(x_t, z, t) and the semantic encoder z = E(x_0)."""
from __future__ import annotations

import torch
from torch import nn

from ..models import DiffusersUNet
from ..schedules import DiscreteVP
from .config import FaceModelConfig

__all__ = ["SemanticEncoder", "FaceDiffusionModel", "build_unet", "build_scheduler"]


class SemanticEncoder(nn.Module):
    """Small CNN: image (b, 3, S, S) in [-1, 1] → semantic code z (b, z_dim) (DiffAE's z_sem, small)."""

    def __init__(self, channels: tuple, z_dim: int):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c // 4), c), nn.SiLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, z_dim)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def build_unet(config: FaceModelConfig):
    """diffusers UNet2DModel, ε-prediction, z added to the time embedding (identity class embedding)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=config.image_size, in_channels=3, out_channels=3, layers_per_block=config.layers_per_block,
        block_out_channels=config.block_out_channels, down_block_types=config.down_block_types,
        up_block_types=config.up_block_types, class_embed_type="identity",
        norm_num_groups=min(32, config.block_out_channels[0] // 2),
    )


def build_scheduler(config: FaceModelConfig):
    """diffusers DDPMScheduler with the linear-β schedule of the configuration (ε-prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start,
                         beta_end=config.beta_end, beta_schedule="linear", prediction_type="epsilon")


class FaceDiffusionModel(nn.Module):
    """UNet + semantic encoder + schedule.  ``eps_model`` follows adjointlib's model(x, t, z) convention.

    A UNet without an identity class embedding (e.g. a public unconditional DDPM) gives an
    unconditional model: no encoder, z = None.

    Use: ``z = model.encode(x0)``; ``al.sample(model.eps_model, model.schedule, x_T, z, steps=20)``.
    """

    def __init__(self, config: FaceModelConfig, unet=None, encoder=None, scheduler=None):
        super().__init__()
        self.config = config
        self.unet = unet if unet is not None else build_unet(config)
        self.scheduler = scheduler if scheduler is not None else build_scheduler(config)
        conditional = self.unet.config.class_embed_type == "identity"
        self.encoder = encoder if encoder is not None or not conditional else SemanticEncoder(
            config.encoder_channels, config.z_dim)
        self.eps_model = DiffusersUNet(self.unet, conditioning="class" if conditional else None)
        self.schedule = DiscreteVP.from_diffusers(self.scheduler)

    def encode(self, x0: torch.Tensor):
        """z = E(x_0): (b, 3, S, S) in [-1, 1] → (b, z_dim); None for an unconditional model."""
        return None if self.encoder is None else self.encoder(x0)

    def training_loss(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """DDPM simple loss with z from the jointly trained encoder:
        E ||ε − ε_θ(α_t x_0 + σ_t ε, E(x_0), t)||²  (Ho et al. 2020, eq. 14; DiffAE §3.1)."""
        shape = (-1, 1, 1, 1)
        alpha, sigma = self.schedule.alpha(t.to(x0.dtype)).view(shape), self.schedule.sigma(t.to(x0.dtype)).view(shape)
        x_t = alpha * x0 + sigma * noise
        return (self.eps_model(x_t, t.to(x0.dtype), self.encode(x0)) - noise).square().mean()

    def parameter_count(self) -> dict:
        count = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"unet": count(self.unet), "encoder": count(self.encoder)}
