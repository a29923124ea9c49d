"""A small CNN inpainter: a training-only fill for the inpainting detector.

The seen fills (``training.inpainting``) are classical (OpenCV Telea and
Navier-Stokes, a Poisson-blended patch) or latent (the VAE decodes a
re-synthesised hole); none is a *learned* pixel-space inpainter, the
context-encoder / LaMa family behind most object-removal tools, one of the four
families Inpaint32K covers. ``CnnInpainter`` is the smallest member of that
family that still fills plausibly: the masked image and the mask in, two
stride-2 stages, dilated residual blocks at quarter resolution (the receptive
field reaches across a hole), transposed convolutions with skip connections
back up. It is trained with ``python -m training.train_inpainter`` (L1, the hole
weighted up, on crops of the *train* photos) and used only to make training
samples (the ``cnn`` fill); the service never loads it, and the benchmark's
fills do not include it (its seen / unseen groups stay as they were).

Its fills are blurry and a little off in colour: an early CNN inpainter, not a
good one. That is enough to matter: as extra detector training samples, they
moved the held-out ``smooth`` fill's AUC where no classical fill had
(docs/inpainting-history.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "origin-id/cnn-inpainter/v1"
#: Where ``python -m training.train_inpainter`` writes the bundled weights.
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "cnn_inpainter.safetensors"


def weights_digest(path: str | Path) -> str:
    """A short name for an inpainter's weights file: cached samples painted with it carry
    it, so retrained weights never reuse fills of the old ones."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]


@dataclass
class CnnInpainterConfig:
    #: Channels after the first stride-2 stage (the input stage has half, the middle 4/3).
    width: int = 48
    #: One residual block per entry, at quarter resolution, with that dilation.
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1)
    #: A fill runs at this longer side (the image is taken down to it, the fill scaled back up):
    #: the size the network was trained near, and a bounded cost per sample.
    work_side: int = 192
    training: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dilations = tuple(self.dilations)  # JSON gives a list


class DilatedBlock(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.wide = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(F.silu(self.wide(F.silu(self.norm(x)))))


class CnnInpainter(nn.Module):
    """Masked image (RGB in [-1, 1]) and mask (1 = hole) -> the whole image predicted.

    Sides must be multiples of 4 (two stride-2 stages)."""

    def __init__(self, config: CnnInpainterConfig | None = None):
        super().__init__()
        self.config = config or CnnInpainterConfig()
        w = self.config.width
        inner = w * 4 // 3
        self.stem = nn.Conv2d(4, w // 2, 5, padding=2)
        self.down1 = nn.Conv2d(w // 2, w, 4, stride=2, padding=1)
        self.down2 = nn.Conv2d(w, inner, 4, stride=2, padding=1)
        self.middle = nn.Sequential(*[DilatedBlock(inner, d) for d in self.config.dilations])
        self.up2 = nn.ConvTranspose2d(inner, w, 4, stride=2, padding=1)
        self.up1 = nn.ConvTranspose2d(2 * w, w // 2, 4, stride=2, padding=1)
        self.head = nn.Conv2d(w, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h0 = F.silu(self.stem(torch.cat([image * (1 - mask), mask], 1)))
        h1 = F.silu(self.down1(h0))
        h = self.middle(F.silu(self.down2(h1)))
        h = F.silu(self.up2(h))
        h = F.silu(self.up1(torch.cat([h, h1], 1)))
        return torch.tanh(self.head(torch.cat([h, h0], 1)))

    @torch.inference_mode()
    def fill(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``image`` (uint8 HxWx3) with the pixels under ``mask`` (bool HxW) painted in.

        The fill is predicted at ``work_side`` (longer side), scaled back up with bicubic
        interpolation and pasted into the hole without feathering, as simple tools do."""
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != mask.shape:
            raise ValueError(f"want an HxWx3 image and an HxW mask, got {image.shape} and {mask.shape}")
        h, w = mask.shape
        scale = self.config.work_side / max(h, w)
        width, height = (max(16, round(side * scale / 4) * 4) for side in (w, h))
        small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        # Any hole pixel makes its small pixel a hole: no painted pixel is predicted from itself.
        small_mask = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0.01
        device = next(self.parameters()).device
        x = torch.from_numpy(small).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1
        m = torch.from_numpy(small_mask).float()[None, None].to(device)
        pred = self(x, m)[0].permute(1, 2, 0).cpu().numpy()
        pred = cv2.resize((pred + 1) * 127.5, (w, h), interpolation=cv2.INTER_CUBIC)
        out = image.astype(np.float32)
        out[mask] = pred[mask]
        return np.clip(out, 0, 255).astype(np.uint8)
