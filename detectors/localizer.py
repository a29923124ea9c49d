"""Pixel-level localization as conditional mask generation (InpDiffusion, seed 001).

The mask is not read off a segmentation head: a small UNet denoises a noisy
two-channel map (mask, mask edge) conditioned on the detector's fused
multi-scale features, its coarse mask logit and the pixel reconstruction
error. It predicts x0 directly (mask and edge logits, the edge channel
supervised with the mask boundary, InpDiffusion's edge supervision). Sampling
is DDIM from pure noise drawn from a seeded generator, and the answer is the
average of the x0 predictions of all steps, so a given query and seed always
give the same mask. As served (``sample_mirrored``), the query and its mirror
image are sampled side by side with ``sample_steps`` (5) steps each: 10 x0
predictions averaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from origin_id.detectors.denoiser import timestep_embedding

FORMAT = "origin-id/mask-diffusion-localizer/v2"


@dataclass
class LocalizerConfig:
    cond_channels: int = 36
    #: Channels on the 64 x 64, 32 x 32 and 16 x 16 grids. The shipped localizer is 32, 48, 96: trained at
    #: these defaults, then narrowed (``narrowed``) and fine-tuned: the same masks for less time per query.
    widths: list[int] = field(default_factory=lambda: [48, 64, 96])
    train_timesteps: int = 1000
    #: Input width of the timestep embedding (0 = ``widths[0]``); a localizer narrowed from a
    #: wider one (``narrowed``) keeps the embedding it was trained with.
    time_width: int = 0
    #: DDIM steps per view; ``sample_mirrored`` runs two views, so 10 x0 predictions in all.
    sample_steps: int = 5
    #: Averaged mask probability at or above which a pixel is called inpainted.
    pixel_threshold: float = 0.5
    calibration: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


def cosine_alphas_cumprod(steps: int) -> torch.Tensor:
    s = 0.008
    x = torch.linspace(0, steps, steps + 1, dtype=torch.float64)
    f = torch.cos((x / steps + s) / (1 + s) * math.pi / 2) ** 2
    ab = (f / f[0])[1:]
    return ab.clamp(1e-5, 0.9999).float()


def mask_edges(mask: torch.Tensor) -> torch.Tensor:
    """Boundary band of a (N,1,H,W) {0,1} mask: dilation minus erosion."""
    dilated = nn.functional.max_pool2d(mask, 3, stride=1, padding=1)
    eroded = -nn.functional.max_pool2d(-mask, 3, stride=1, padding=1)
    return dilated - eroded


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample 1 - soft Dice of (N,1,H,W) probabilities against a {0,1} mask (+1 smoothing)."""
    overlap = (prob * target).sum((1, 2, 3))
    return 1 - (2 * overlap + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        # Replicate padding: zero padding made a flat image's corner look like a region edge.
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, padding_mode="replicate")
        self.norm1 = nn.GroupNorm(8, cout)
        self.emb = nn.Linear(emb, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, padding_mode="replicate")
        self.norm2 = nn.GroupNorm(8, cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = nn.functional.silu(self.norm1(self.conv1(x))) + self.emb(e)[:, :, None, None]
        h = nn.functional.silu(self.norm2(self.conv2(h)))
        return h + self.skip(x)


def _by_group(score: torch.Tensor, keep: int, groups: int = 8) -> torch.Tensor:
    """Indices of the ``keep // groups`` highest scores within each of ``groups`` equal groups, in order."""
    per_group = score.reshape(groups, -1)
    top = per_group.topk(keep // groups, 1).indices + torch.arange(groups)[:, None] * per_group.shape[1]
    return top.flatten().sort().values


@torch.no_grad()
def _narrow_block(src: _Block, dst: _Block, inputs: torch.Tensor) -> torch.Tensor:
    """Copy into ``dst`` the part of ``src`` that reads channels ``inputs`` of its input and
    writes the channels ``_by_group`` keeps; returns the kept output channels."""
    cout = dst.conv1.out_channels
    if isinstance(src.skip, nn.Identity) != isinstance(dst.skip, nn.Identity):
        raise ValueError(f"a block of {src.conv1.in_channels} -> {src.conv1.out_channels} channels cannot become "
                         f"{dst.conv1.in_channels} -> {cout}: its skip would change from or to a plain residual")
    inner = _by_group(src.norm1.weight.abs() * src.conv1.weight.flatten(1).norm(dim=1), cout)
    if isinstance(src.skip, nn.Identity):  # the residual ties the output to the input channels
        outer = inputs
    else:
        outer = _by_group(src.norm2.weight.abs() * src.conv2.weight.flatten(1).norm(dim=1), cout)
    dst.conv1.weight.copy_(src.conv1.weight[inner][:, inputs])
    dst.conv1.bias.copy_(src.conv1.bias[inner])
    dst.norm1.weight.copy_(src.norm1.weight[inner])
    dst.norm1.bias.copy_(src.norm1.bias[inner])
    dst.emb.weight.copy_(src.emb.weight[inner])
    dst.emb.bias.copy_(src.emb.bias[inner])
    dst.conv2.weight.copy_(src.conv2.weight[outer][:, inner])
    dst.conv2.bias.copy_(src.conv2.bias[outer])
    dst.norm2.weight.copy_(src.norm2.weight[outer])
    dst.norm2.bias.copy_(src.norm2.bias[outer])
    if not isinstance(src.skip, nn.Identity):
        dst.skip.weight.copy_(src.skip.weight[outer][:, inputs])
        dst.skip.bias.copy_(src.skip.bias[outer])
    return outer


class MaskDiffusionLocalizer(nn.Module):
    def __init__(self, config: LocalizerConfig):
        super().__init__()
        self.config = config
        w = config.widths
        if len(w) != 3 or any(c % 8 for c in w):
            raise ValueError(f"widths must be three multiples of 8 (GroupNorm of 8 groups), got {w}")
        self.time_width = config.time_width or w[0]
        emb = self.time_width * 2
        self.time = nn.Sequential(nn.Linear(self.time_width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.enc = nn.ModuleList([_Block(2 + config.cond_channels, w[0], emb), _Block(w[0], w[1], emb),
                                  _Block(w[1], w[2], emb)])
        self.mid = _Block(w[2], w[2], emb)
        self.dec = nn.ModuleList([_Block(w[2] + w[1], w[1], emb), _Block(w[1] + w[0], w[0], emb)])
        self.out = nn.Conv2d(w[0], 2, 3, padding=1, padding_mode="replicate")
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(config.train_timesteps), persistent=False)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Noisy (mask, edge) in [-1, 1] scale, timesteps, condition -> x0 logits (N, 2, H, W)."""
        e = self.time(timestep_embedding(t, self.time_width))
        h0 = self.enc[0](torch.cat([x_t, cond], 1), e)
        h1 = self.enc[1](nn.functional.avg_pool2d(h0, 2), e)
        h2 = self.enc[2](nn.functional.avg_pool2d(h1, 2), e)
        h = self.mid(h2, e)
        h = self.dec[0](torch.cat([nn.functional.interpolate(h, scale_factor=2.0), h1], 1), e)
        h = self.dec[1](torch.cat([nn.functional.interpolate(h, scale_factor=2.0), h0], 1), e)
        return self.out(h)

    def narrowed(self, widths: list[int]) -> MaskDiffusionLocalizer:
        """A localizer of ``widths`` (each at most this one's) started from this one's weights,
        to be fine-tuned: every block keeps, within each of its GroupNorm groups, the channels
        whose normalised output is largest (the norm's scale times the convolution's weight
        norm), and the layers that read a block keep the inputs of those channels. The
        timestep embedding is kept whole. Not the same function: the kept channels' group
        statistics change, so it needs the fine-tune, but it starts from where this one is."""
        old = self.config.widths
        if len(widths) != len(old) or any(n > o for n, o in zip(widths, old)):
            raise ValueError(f"cannot narrow widths {old} to {widths}")
        narrow = MaskDiffusionLocalizer(replace(self.config, widths=list(widths), time_width=self.time_width))
        narrow.time.load_state_dict(self.time.state_dict())
        everything = torch.arange(2 + self.config.cond_channels)
        kept_enc = []
        inputs = everything
        for src, dst in zip(self.enc, narrow.enc):
            inputs = _narrow_block(src, dst, inputs)
            kept_enc.append(inputs)
        mid = _narrow_block(self.mid, narrow.mid, inputs)
        # Decoder inputs: the upsampled path, then the encoder's skip of the same level.
        inputs = mid
        for (src, dst), skip, skip_offset in zip(zip(self.dec, narrow.dec), kept_enc[1::-1], old[2:0:-1]):
            inputs = _narrow_block(src, dst, torch.cat([inputs, skip + skip_offset]))
        with torch.no_grad():
            narrow.out.weight.copy_(self.out.weight[:, inputs])
            narrow.out.bias.copy_(self.out.bias)
        return narrow.train(self.training)

    def training_loss(self, cond: torch.Tensor, mask: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """mask: (N,1,H,W) in {0,1} at the condition's resolution."""
        edge = mask_edges(mask)
        x0 = torch.cat([mask, edge], 1) * 2 - 1
        t = torch.randint(0, self.config.train_timesteps, (len(x0),), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        logits = self(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t, cond)
        bce = nn.functional.binary_cross_entropy_with_logits
        edge_weight = torch.tensor(4.0, device=x0.device)
        return (bce(logits[:, :1], mask) + soft_dice_loss(torch.sigmoid(logits[:, :1]), mask).mean()
                + 0.5 * bce(logits[:, 1:], edge, pos_weight=edge_weight))

    @torch.inference_mode()
    def sample(self, cond: torch.Tensor, seed: int = 0, steps: int | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """Mask probability (N,1,H,W): DDIM from seeded noise, x0 predictions averaged over steps.

        Every condition starts from the same draw of ``seed`` (a batch of one's), so a mask does
        not depend on what it was batched with; ``noise`` (N,2,H,W) gives the start instead."""
        steps = steps or self.config.sample_steps
        n, _, h, w = cond.shape
        if noise is None:
            generator = torch.Generator(device=cond.device).manual_seed(seed)
            noise = torch.randn((1, 2, h, w), generator=generator, device=cond.device).expand(n, -1, -1, -1)
        elif tuple(noise.shape) != (n, 2, h, w):
            raise ValueError(f"noise must have shape {(n, 2, h, w)} for this condition, got {tuple(noise.shape)}")
        x = noise.contiguous()
        times = torch.linspace(self.config.train_timesteps - 1, 0, steps).round().long().tolist()
        total = torch.zeros((n, 1, h, w), device=cond.device)
        for i, t in enumerate(times):
            logits = self(x, torch.full((n,), t, device=cond.device, dtype=torch.long), cond)
            total += torch.sigmoid(logits[:, :1])
            x0 = torch.tanh(logits / 2)  # = 2 * sigmoid(logits) - 1
            if i + 1 < len(times):
                ab, ab_next = self.alphas_cumprod[t], self.alphas_cumprod[times[i + 1]]
                eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
                x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return total / len(times)

    @torch.inference_mode()
    def sample_mirrored(self, cond: torch.Tensor, mirrored_cond: torch.Tensor, seed: int = 0,
                        steps: int | None = None) -> torch.Tensor:
        """Mask probability (N,1,H,W) averaged over the query and its mirror image.

        ``mirrored_cond``: the condition of the mirrored query (``InpaintingDetector.mirrored``).
        Both are sampled in one batch and the mirror's map is flipped back. Two independent
        trajectories are what helps (alternating the view between the steps of one
        trajectory did not); two views of 5 steps each localized best on the val split and
        cost least of the settings tried (docs/inpainting-history.md)."""
        n, _, h, w = cond.shape
        # One draw per view, shared by every query of the batch (batch-invariant masks).
        generator = torch.Generator(device=cond.device).manual_seed(seed)
        views = torch.randn((2, 1, 2, h, w), generator=generator, device=cond.device)
        noise = views.expand(2, n, 2, h, w).flatten(0, 1)
        both = self.sample(torch.cat([cond, mirrored_cond]), steps=steps, noise=noise)
        return (both[:len(cond)] + both[len(cond):].flip(-1)) / 2


def localizer_condition(features: torch.Tensor, mask_logit: torch.Tensor,
                        pixel_error: torch.Tensor) -> torch.Tensor:
    """The localizer's condition: fused features, coarse mask logit, pooled pixel error."""
    size = features.shape[-2:]
    err = nn.functional.adaptive_avg_pool2d(pixel_error, size) * 4
    return torch.cat([features, mask_logit, err], 1)
