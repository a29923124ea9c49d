"""The VAE whose encoder turns an image into the latent that ID2 embeds.

Two ways to get one:

* ``small_vae_config()`` is the project's own compact ``AutoencoderKL``
  (block channels 16-32-64-128, one ResNet layer per block, 4 latent channels).
  It keeps the Stable Diffusion layout (8x downsampling, 4x32x32 latent at
  256x256 input, so the transform has the paper's 4096 inputs) at a size that
  embeds > 15 images/s on a 2-core CPU. ``training/train_vae.py`` trains it.
* ``load_vae(source)`` loads any diffusers ``AutoencoderKL``: a Hugging Face id
  (``stabilityai/stable-diffusion-2``, with ``subfolder="vae"`` found
  automatically) or a local directory saved with ``save_pretrained``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

#: Input side the encoder sees (ID2: resize to 256x256, no crop).
INPUT_SIZE = 256


def small_vae_config() -> dict[str, Any]:
    """Config of the bundled compact VAE (diffusers ``AutoencoderKL`` kwargs)."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [16, 32, 64, 128],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": INPUT_SIZE,
        # Mid-block attention costs ~15% of encode time for no measurable gain
        # on a spatial latent that is linearly projected afterwards.
        "mid_block_add_attention": False,
    }


def build_small_vae() -> AutoencoderKL:
    return AutoencoderKL(**small_vae_config())


def load_vae(source: str | Path, *, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """Load an ``AutoencoderKL`` from a local directory or a Hugging Face id.

    A local directory may be the VAE itself (``config.json`` at its top) or a
    full pipeline folder with a ``vae/`` subfolder; the same holds for hub ids.
    Hub downloads obey the usual ``HF_HOME`` / ``HF_HUB_OFFLINE`` variables.
    """
    path = Path(source)
    if path.exists():
        if (path / "config.json").is_file():
            return AutoencoderKL.from_pretrained(path, torch_dtype=dtype, low_cpu_mem_usage=False)
        if (path / "vae" / "config.json").is_file():
            return AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, low_cpu_mem_usage=False)
        raise FileNotFoundError(
            f"{path} holds no AutoencoderKL: expected config.json or vae/config.json"
        )
    source = str(source)
    try:
        return AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, low_cpu_mem_usage=False)
    except (OSError, ValueError):
        # A repository that is a VAE by itself (e.g. stabilityai/sd-vae-ft-mse).
        return AutoencoderKL.from_pretrained(source, torch_dtype=dtype, low_cpu_mem_usage=False)


def preprocess(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB images -> the VAE's input: float tensor (N, 3, 256, 256) in [-1, 1].

    ID2's view: resized to 256x256 (no crop); the embedder and the inpainting
    detectors both use it, so they see the same pixels."""
    return to_tensor(preprocess_arrays(images))


def preprocess_arrays(images: Sequence[Image.Image]) -> np.ndarray:
    """``preprocess`` as a NumPy array (N, 256, 256, 3).

    The arithmetic is NumPy's (bit-identical to torch's here), not torch's: a torch op
    on a request thread would start an OpenMP team there (see ``origin_id.models.compute``)."""
    return scale_view(view_pixels(images))


def view_pixels(images: Sequence[Image.Image]) -> np.ndarray:
    """The 256 x 256 views as 8-bit pixels (N, 256, 256, 3): what a process that decodes
    hands to one that embeds (``scale_view`` of them is exactly ``preprocess_arrays``)."""
    # reducing_gap: a downscale of 6x or more first averages integer blocks, then resamples
    # (much faster on large photos, a mean change well under one gray level); smaller ones, and
    # so every image up to 1,535 px, are resized exactly as without it.
    return np.stack([
        np.asarray((im if im.mode == "RGB" else im.convert("RGB")).resize(
            (INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC, reducing_gap=3.0), dtype=np.uint8)
        for im in images])


def scale_view(pixels: np.ndarray) -> np.ndarray:
    """8-bit views -> the VAE's input range [-1, 1], float32."""
    return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def to_tensor(arrays: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) -> (N, 3, H, W) sharing memory (channels-last strides, as the VAE runs)."""
    return torch.from_numpy(arrays).permute(0, 3, 1, 2)


def vae_fingerprint(vae: torch.nn.Module) -> str:
    """A short hash of a model's weights, independent of where it was loaded from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
