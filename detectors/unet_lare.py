"""LaRE maps from a pretrained diffusion UNet, as LaRE^2 computes them (seed 003).

``LatentDenoiser`` is the project's stand-in for the diffusion UNet, small enough
to train on this CPU. Given a Stable Diffusion pipeline (a Hugging Face id, or a
local folder with ``unet/``, ``scheduler/``, ``text_encoder/`` and
``tokenizer/``), ``UNetLare`` computes the map the paper's way instead: the VAE
latent times the VAE's ``scaling_factor``, noised to t=200 with the pipeline's
own schedule, one UNet step conditioned on the prompt's text embedding (empty by
default), and the squared noise-prediction error averaged over a few draws (a
v-prediction UNet's output, e.g. Stable Diffusion 2 at 768 px, is turned into
the noise it implies first). It has the same ``lare(latents, seed)`` method and
``config.latent_channels`` as ``LatentDenoiser``, so the analyzer and the training
script take either.

A detector learns the statistics of one LaRE source, so a detectors directory
holds exactly one: ``denoiser.safetensors`` or ``lare_unet.safetensors``. The
latter is small: the noise schedule, the prompt's text embedding (computed once
at training time, so serving needs neither the text encoder nor
``transformers``) and the config naming where the UNet's weights are loaded from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from origin_id.models.weights import read_checkpoint, write_checkpoint

FORMAT = "origin-id/unet-lare/v1"


@dataclass
class UNetLareConfig:
    #: Where the UNet is loaded from: a Hugging Face id or a local directory (a pipeline
    #: folder with ``unet/``, or the UNet's own folder). Hub ids honour ``HF_HOME``.
    source: str
    latent_channels: int = 4
    #: The VAE's ``scaling_factor``: latents are multiplied by it before noising, as the
    #: pipeline that trained the UNet did (0.18215 for Stable Diffusion 1.x / 2.x).
    scaling_factor: float = 0.18215
    prompt: str = ""
    #: What the UNet predicts (its scheduler's ``prediction_type``): "epsilon", "v_prediction"
    #: (Stable Diffusion 2 at 768 px) or "sample"; turned into a noise prediction either way.
    prediction_type: str = "epsilon"
    lare_timestep: int = 200
    lare_draws: int = 4


def load_unet(source: str | Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A diffusers ``UNet2DConditionModel`` from a pipeline (``unet/`` subfolder) or a UNet folder."""
    from diffusers import UNet2DConditionModel

    sub = None if (Path(source) / "config.json").is_file() else "unet"
    try:
        unet = UNet2DConditionModel.from_pretrained(str(source), subfolder=sub, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"no diffusers UNet2DConditionModel at {source} ({exc})") from exc
    if unet.config.addition_embed_type is not None:
        raise ValueError(f"{source}: UNets that need added conditioning ({unet.config.addition_embed_type}, "
                         "e.g. SDXL) are not supported; use a Stable Diffusion 1.x / 2.x pipeline")
    return unet.eval().requires_grad_(False)


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def pipeline_schedule(source: str | Path) -> tuple[torch.Tensor, str]:
    """The pipeline's cumulative alphas and prediction type (``scheduler/``): the schedule
    its UNet was trained with and what it predicts."""
    from diffusers import DDPMScheduler

    try:
        scheduler = DDPMScheduler.from_pretrained(str(source), subfolder="scheduler")
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"no scheduler/ config in {source} ({exc})") from exc
    return scheduler.alphas_cumprod.float(), scheduler.config.prediction_type


@torch.no_grad()
def prompt_embedding(source: str | Path, prompt: str = "") -> torch.Tensor:
    """The pipeline's text embedding of ``prompt`` (1, tokens, dim), as its UNet is conditioned."""
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as exc:
        raise ImportError("computing the prompt embedding needs transformers: "
                          "pip install 'origin-id[pretrained]'") from exc
    tokenizer = CLIPTokenizer.from_pretrained(str(source), subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(str(source), subfolder="text_encoder").eval()
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return encoder(ids)[0].float()


class UNetLare(nn.Module):
    """LaRE map (N, C, h, w) of VAE latents from a pretrained UNet; see the module docstring."""

    def __init__(self, config: UNetLareConfig, unet: nn.Module, alphas_cumprod: torch.Tensor,
                 context: torch.Tensor):
        super().__init__()
        if unet.config.in_channels != config.latent_channels:
            raise ValueError(f"the UNet takes {unet.config.in_channels}-channel latents, "
                             f"the config says {config.latent_channels}")
        if config.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {config.prediction_type!r}; known: {PREDICTION_TYPES}")
        if context.shape[-1] != unet.config.cross_attention_dim:
            raise ValueError(f"prompt embedding width {context.shape[-1]} does not match the UNet's "
                             f"cross_attention_dim {unet.config.cross_attention_dim}")
        self.config = config
        self.unet = unet
        # Buffers, so they follow the module to its device; not part of any state dict we save.
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.register_buffer("context", context.float(), persistent=False)

    @classmethod
    def from_pretrained(cls, source: str | Path, scaling_factor: float, prompt: str = "",
                        dtype: torch.dtype = torch.float32, **lare: int) -> UNetLare:
        """Build from a pipeline: its UNet, its schedule and its text embedding of ``prompt``.
        ``scaling_factor``: the VAE's (``vae.config.scaling_factor``)."""
        # A local pipeline is recorded by absolute path: the server need not start where training ran.
        source = str(Path(source).resolve()) if Path(source).exists() else str(source)
        unet = load_unet(source, dtype)
        alphas_cumprod, prediction_type = pipeline_schedule(source)
        config = UNetLareConfig(source=source, latent_channels=unet.config.in_channels,
                                scaling_factor=scaling_factor, prompt=prompt, prediction_type=prediction_type,
                                **lare)
        return cls(config, unet, alphas_cumprod, prompt_embedding(source, prompt))

    def save(self, path: str | Path) -> None:
        """The schedule, the text embedding and the config (the UNet is referenced, not copied)."""
        write_checkpoint(path, {"alphas_cumprod": self.alphas_cumprod, "context": self.context}, FORMAT,
                         self.config)

    @classmethod
    def load(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> UNetLare:
        fields, tensors = read_checkpoint(path, FORMAT, "a LaRE UNet file")
        config = UNetLareConfig(**fields)
        return cls(config, load_unet(config.source, dtype), tensors["alphas_cumprod"], tensors["context"])

    @torch.inference_mode()
    def lare(self, latents: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Squared noise-prediction error at ``lare_timestep``, averaged over ``lare_draws``
        noise draws, float32. All draws go through the UNet as one batch. Deterministic for
        a given seed, and the same for a latent alone or in any batch (each latent gets a
        batch of one's draws)."""
        cfg = self.config
        z0 = latents.float() * cfg.scaling_factor
        draws = cfg.lare_draws
        generator = torch.Generator(device=z0.device).manual_seed(seed)
        noise = torch.randn((draws, 1, *z0.shape[1:]), generator=generator,
                            device=z0.device).expand(draws, *z0.shape)
        ab = self.alphas_cumprod[cfg.lare_timestep]
        a, s = ab.sqrt(), (1 - ab).sqrt()  # z_t = a z0 + s eps
        z_t = (a * z0 + s * noise).flatten(0, 1)
        t = torch.full((len(z_t),), cfg.lare_timestep, device=z0.device, dtype=torch.long)
        dtype = self.unet.dtype
        context = self.context.to(dtype).expand(len(z_t), -1, -1)
        out = self.unet(z_t.to(dtype), t, encoder_hidden_states=context).sample.float()
        # The noise the UNet implies, whatever it was trained to predict.
        if cfg.prediction_type == "v_prediction":  # v = a eps - s z0
            out = a * out + s * z_t
        elif cfg.prediction_type == "sample":  # the UNet predicts z0
            out = (z_t - a * out) / s
        return ((out.view_as(noise) - noise) ** 2).mean(0)
