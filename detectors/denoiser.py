"""A small latent denoiser and the LaRE map it yields (LaRE^2, seed 003).

LaRE^2 noises the VAE latent of an image to timestep t=200, asks a diffusion
UNet for the noise in one step and keeps the squared error of that prediction
as a 4-channel map: generated or painted-in content is predicted differently
from camera content. No pretrained diffusion UNet can be downloaded here, so
the project trains ``LatentDenoiser`` on latents of the bundled VAE
(``python -m training.train_detectors``); ``origin_id.detectors.unet_lare.UNetLare`` computes
the same map with a real pipeline's UNet (``--lare-unet``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

FORMAT = "origin-id/latent-denoiser/v1"


@dataclass
class DenoiserConfig:
    latent_channels: int = 4
    width: int = 64
    blocks: int = 4
    #: DDPM training schedule (linear betas, as Stable Diffusion's scaled-linear at this size).
    train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    #: Latents are divided by this before noising (measured std of the VAE's latents).
    latent_scale: float = 1.0
    #: LaRE^2's choice: one step at t=200, error averaged over a few noise draws.
    lare_timestep: int = 200
    lare_draws: int = 4


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class _ResBlock(nn.Module):
    def __init__(self, width: int, emb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.emb = nn.Linear(emb, width)
        self.norm2 = nn.GroupNorm(8, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x))) + self.emb(e)[:, :, None, None]
        return x + self.conv2(nn.functional.silu(self.norm2(h)))


class LatentDenoiser(nn.Module):
    """epsilon-prediction network over VAE latents, conditioned on the timestep."""

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.time = nn.Sequential(nn.Linear(w, w * 2), nn.SiLU(), nn.Linear(w * 2, w * 2))
        self.inp = nn.Conv2d(config.latent_channels, w, 3, padding=1)
        self.down = nn.Conv2d(w, w, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList([_ResBlock(w, w * 2) for _ in range(config.blocks)])
        self.up = nn.ConvTranspose2d(w, w, 4, stride=2, padding=1)
        self.out = nn.Sequential(nn.GroupNorm(8, w * 2), nn.SiLU(), nn.Conv2d(w * 2, config.latent_channels, 3,
                                                                             padding=1))
        betas = torch.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, config.train_timesteps) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0), persistent=False)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = self.time(timestep_embedding(t, self.config.width))
        h0 = self.inp(z_t)
        h = self.down(h0)
        for block in self.blocks:
            h = block(h, e)
        h = self.up(h)
        return self.out(torch.cat([h, h0], 1))

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return ab.sqrt() * z0 + (1 - ab).sqrt() * noise

    def training_loss(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z0 = latents / self.config.latent_scale
        t = torch.randint(0, self.config.train_timesteps, (len(z0),), generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        return nn.functional.mse_loss(self(self.add_noise(z0, noise, t), t), noise)

    @torch.inference_mode()
    def lare(self, latents: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """LaRE map (N, C, h, w): squared noise-prediction error at ``lare_timestep``,
        averaged over ``lare_draws`` noise draws. Deterministic for a given seed, and the
        same for a latent alone or in any batch: every latent gets the draws a batch of one
        gets (a row of the batch's own draws would tie its map to its place in the batch)."""
        cfg = self.config
        z0 = latents / cfg.latent_scale
        generator = torch.Generator(device=z0.device).manual_seed(seed)
        t = torch.full((len(z0),), cfg.lare_timestep, device=z0.device, dtype=torch.long)
        total = torch.zeros_like(z0)
        for _ in range(cfg.lare_draws):
            noise = torch.randn((1, *z0.shape[1:]), generator=generator, device=z0.device).expand_as(z0)
            total = total + (self(self.add_noise(z0, noise, t), t) - noise) ** 2
        return total / cfg.lare_draws
