"""Image-level inpainting detector: image features refined by reconstruction errors.

The design follows the seeds at a size this CPU can train and serve:

* two inputs per query, both from the shared VAE: the **pixel reconstruction
  error** ``|x - D(E(x))|`` (End4: content the autoencoder reproduces badly or
  too well stands out) and the **LaRE map** of ``LatentDenoiser`` (LaRE^2);
* a trace branch and an error branch, each a 4-level pyramid (1/2 .. 1/16).
  The trace branch sees the image's fine residual band (the image minus its 3x3
  mean; ``residual_band``), where fills leave their traces, twice: as is and
  divided by the image's mean absolute value of that band, so "smoother than the
  rest of this image" reads the same on a noisy photo and a clean render. It gets
  no raw RGB: with colours, a detector trained on a few dozen photos learns the
  photos rather than the fills (docs/inpainting-history.md);
* at every level, **error-guided spatial refinement** (a sigmoid attention map
  from the error features re-weights image features where reconstruction
  disagrees) and **error-guided channel refinement** (a gate from pooled error
  features), LaRE^2's ESR / ECR;
* a **scale-aware pyramid fusion** (End4): every level is projected to a common
  width at 1/4 resolution and mixed with per-pixel softmax weights over scales;
* two heads on the fused map: a coarse mask logit (dense supervision in
  training, a condition of the localizer) and the image logit, from average +
  max pooled features and the mask's own evidence (mean of its top 2% and its
  mean), so the image verdict rests on where the model sees a painted region
  and a small region is not averaged away.

``forward`` returns all three (logit, coarse mask logit, fused features); the
localizer is conditioned on the fused features. The served ``verdict`` averages
the image logits of the query and its mirror image (one batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

FORMAT = "origin-id/inpainting-detector/v2"


@dataclass
class DetectorConfig:
    image_widths: list[int] = field(default_factory=lambda: [16, 32, 64, 96])
    error_widths: list[int] = field(default_factory=lambda: [8, 16, 32, 32])
    lare_channels: int = 4
    fused_width: int = 32
    #: Pixel errors are multiplied by this before the network (they are small numbers).
    error_gain: float = 4.0
    #: Probability at or above which a query is called inpainted (set by calibration).
    threshold: float = 0.5
    #: Below this probability the detector is confident the query is clean and the
    #: localizer is skipped (calibrated so almost no inpainted image falls under it).
    localize_threshold: float = 0.1
    #: Weight of ``copy_move_evidence(CopyMoveSearch score)`` added to the verdict logit (0 = not used);
    #: fit on training samples after the network (``training.detector_calibration.fit_copy_move_weight``).
    copy_move_weight: float = 0.0
    #: Copy-move scores up to this add nothing (``copy_move_evidence``): a few cells matched
    #: by chance, as on clean images, whose count can move with float rounding.
    copy_move_floor: float = 0.0
    #: ``origin_id.models.vae.vae_fingerprint`` of the VAE whose errors it was trained on.
    vae_fingerprint: str = ""
    #: The LaRE maps it was trained on: "" = the project's ``LatentDenoiser``, else the
    #: pretrained pipeline whose UNet made them (``origin_id.detectors.unet_lare``).
    lare_source: str = ""
    calibration: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)

    #: Options of experiments that were measured and not shipped (docs/inpainting-history.md):
    #: a saved config may name them at these values, which is what the model computes.
    RETIRED: ClassVar[dict[str, Any]] = {"trace_bands": 1, "scale_view": 0}


def copy_move_evidence(score: torch.Tensor, floor: float) -> torch.Tensor:
    """What the verdict adds per unit of ``copy_move_weight``: ``sqrt(max(0, score - floor))``
    of ``CopyMoveSearch`` scores (matched area fractions). The square root lets a small copied
    region count; below the floor, matches are chance (clean images and fills that copy
    nothing score a few cells), and which chance cells a search finds can change with float
    rounding, so the floor also keeps verdicts the same across hosts."""
    return (score - floor).clamp(min=0).sqrt()


class DetectorOutput(NamedTuple):
    logit: torch.Tensor          # (N,)
    mask_logit: torch.Tensor     # (N, 1, H/4, W/4)
    features: torch.Tensor       # (N, fused_width, H/4, W/4)


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def residual_band(image: torch.Tensor) -> torch.Tensor:
    """The trace branch's input: the image (N,3,H,W) minus its 3x3 box mean, twice: as is and
    divided by the image's mean absolute value of that band, so "smoother than the rest of
    this image" reads the same on a noisy photo and a clean render. (N, 6, H, W)."""
    mean = nn.functional.avg_pool2d(image, 3, stride=1, padding=1, count_include_pad=False)
    band = image - mean
    return torch.cat([band * 4, band / (band.abs().mean((1, 2, 3), keepdim=True) + 1e-3) * 0.25], 1)


class ErrorGuidedRefinement(nn.Module):
    """ESR (spatial attention from errors) + ECR (channel gate from errors), then a merge."""

    def __init__(self, image_width: int, error_width: int):
        super().__init__()
        self.spatial = nn.Conv2d(error_width, 1, 3, padding=1)
        self.channel = nn.Sequential(nn.Linear(error_width, image_width), nn.Sigmoid())
        self.merge = nn.Sequential(nn.Conv2d(image_width + error_width, image_width, 1, bias=False),
                                   nn.BatchNorm2d(image_width), nn.ReLU(inplace=True))

    def forward(self, image: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
        refined = image * (1 + torch.sigmoid(self.spatial(error)))
        refined = refined * (1 + self.channel(error.mean((2, 3))))[:, :, None, None]
        return self.merge(torch.cat([refined, error], 1))


class PyramidFusion(nn.Module):
    """Scale-aware fusion: per-pixel softmax weights over the levels, at the finest kept level."""

    def __init__(self, widths: list[int], out: int):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(w, out, 1) for w in widths])
        self.weights = nn.Conv2d(out * len(widths), len(widths), 3, padding=1)
        self.refine = nn.Sequential(nn.Conv2d(out, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                                    nn.ReLU(inplace=True))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        size = levels[0].shape[-2:]
        maps = [nn.functional.interpolate(lat(x), size=size, mode="bilinear", align_corners=False)
                if x.shape[-2:] != size else lat(x) for lat, x in zip(self.lateral, levels)]
        w = torch.softmax(self.weights(torch.cat(maps, 1)), 1)
        return self.refine(sum(w[:, i:i + 1] * m for i, m in enumerate(maps)))


class InpaintingDetector(nn.Module):
    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        iw, ew = config.image_widths, config.error_widths
        self.image_stages = nn.ModuleList([_stage(6 if i == 0 else iw[i - 1], iw[i])
                                           for i in range(len(iw))])
        self.error_stages = nn.ModuleList([_stage(3 if i == 0 else ew[i - 1], ew[i]) for i in range(len(ew))])
        # The LaRE map lives at 1/8 (the latent grid): it joins the error branch there.
        self.lare_level = 2
        self.lare_merge = nn.Sequential(nn.Conv2d(ew[2] + config.lare_channels, ew[2], 1), nn.ReLU(inplace=True))
        self.refine = nn.ModuleList([ErrorGuidedRefinement(a, b) for a, b in zip(iw, ew)])
        # Levels 1/4, 1/8, 1/16 are fused at 1/4 (1/2 is too costly to carry and adds little).
        self.fusion = PyramidFusion(iw[1:], config.fused_width)
        self.mask_head = nn.Conv2d(config.fused_width, 1, 3, padding=1)
        self.image_head = nn.Sequential(nn.Linear(config.fused_width * 2 + iw[-1] + 2, 64), nn.ReLU(inplace=True),
                                        nn.Dropout(0.2), nn.Linear(64, 1))

    def forward(self, image: torch.Tensor, pixel_error: torch.Tensor, lare: torch.Tensor) -> DetectorOutput:
        """image in [-1, 1] (N,3,H,W); pixel_error (N,3,H,W); lare (N,C,H/8,W/8). H, W: multiples of 16."""
        x = residual_band(image)
        e = pixel_error * self.config.error_gain
        levels = []
        for i, (img_stage, err_stage, refine) in enumerate(zip(self.image_stages, self.error_stages,
                                                               self.refine)):
            x, e = img_stage(x), err_stage(e)
            if i == self.lare_level:
                lare_map = torch.log1p(lare)
                if lare_map.shape[-2:] != e.shape[-2:]:
                    lare_map = nn.functional.interpolate(lare_map, size=e.shape[-2:], mode="bilinear",
                                                         align_corners=False)
                e = self.lare_merge(torch.cat([e, lare_map], 1))
            x = refine(x, e)
            levels.append(x)
        fused = self.fusion(levels[1:])
        mask_logit = self.mask_head(fused)
        flat = mask_logit.flatten(1)
        evidence = torch.stack([flat.topk(max(1, flat.shape[1] // 50), 1).values.mean(1), flat.mean(1)], 1)
        pooled = torch.cat([fused.mean((2, 3)), fused.amax((2, 3)), levels[-1].mean((2, 3)), evidence], 1)
        return DetectorOutput(self.image_head(pooled).squeeze(1), mask_logit, fused)

    def mirrored(self, image: torch.Tensor, pixel_error: torch.Tensor, lare: torch.Tensor) -> DetectorOutput:
        """The output for the query's mirror image; its maps stay in mirrored coordinates.

        A fill has no handedness, so the two views must agree; the service averages their
        image logits (``verdict_logit``) and their localized masks (``MaskDiffusionLocalizer.
        sample_mirrored``)."""
        return self(image.flip(-1), pixel_error.flip(-1), lare.flip(-1))

    def both_views(self, image: torch.Tensor, pixel_error: torch.Tensor,
                   lare: torch.Tensor) -> tuple[DetectorOutput, DetectorOutput]:
        """``(self(...), self.mirrored(...))`` from one forward pass over both views (every
        layer works per image in eval mode): one batch is what a GPU wants, and costs a CPU
        nothing."""
        n = len(image)
        both = self(*(torch.cat([t, t.flip(-1)]) for t in (image, pixel_error, lare)))
        return DetectorOutput(*(t[:n] for t in both)), DetectorOutput(*(t[n:] for t in both))

    def verdict(self, image: torch.Tensor, pixel_error: torch.Tensor, lare: torch.Tensor,
                copy_move: torch.Tensor | None = None) -> tuple[torch.Tensor, DetectorOutput, DetectorOutput]:
        """The served verdict logit (``verdict_logit``) with the query's and its mirror's
        outputs, whose features the localizer is conditioned on. The service and the
        calibration both call this, so they read the same views."""
        out, mirrored = self.both_views(image, pixel_error, lare)
        return self.verdict_logit(out, mirrored, copy_move), out, mirrored

    def verdict_logit(self, out: DetectorOutput, mirrored: DetectorOutput,
                      copy_move: torch.Tensor | None = None) -> torch.Tensor:
        """The image logit the service decides on: the query's and its mirror's averaged (a
        fill has no handedness, and two views disagree less than one view's noise), plus
        ``copy_move_weight * copy_move_evidence(copy_move)`` when ``copy_move`` (N,) holds
        ``CopyMoveSearch`` scores."""
        logit = (out.logit + mirrored.logit) / 2
        if copy_move is not None and self.config.copy_move_weight:
            logit = logit + self.config.copy_move_weight * copy_move_evidence(copy_move.to(logit),
                                                                              self.config.copy_move_floor)
        return logit
