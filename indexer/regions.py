"""Region vectors: a reference indexed by its crops as well as whole.

A crop of a picture, resized to the model's input, is a different image to the ID2
embedding: the linear W sees the layout move and scale, and a 60% centre crop scores
about 0.4 against its whole origin. So each reference is also indexed by a few crops
of itself (its *regions*), and a query matches a reference by its best region.

The regions cost no encoder pass: the VAE is fully convolutional, so the latent of a
crop is close to the crop of the latent. Each region is cut from the reference's
latent and resized back to the latent's size (bilinear), then projected by W like the
whole latent. What they cost is index size: ``1 + len(layout)`` vectors per reference.

The layout is in fractions of the image, (x0, y0, x1, y1): the whole image is region
0 and is not listed. ``DEFAULT_LAYOUT``: a 75% window at the centre and each corner,
and a 55% window at the centre.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Box = tuple[float, float, float, float]


def windows(side: float, anchors: Sequence[tuple[float, float]]) -> list[Box]:
    """Square windows of ``side`` (a fraction of each side) placed at ``anchors``: (0, 0)
    the top-left corner, (0.5, 0.5) the centre, (1, 1) the bottom-right corner."""
    return [((1 - side) * ax, (1 - side) * ay, (1 - side) * ax + side, (1 - side) * ay + side)
            for ax, ay in anchors]


CENTRE_AND_CORNERS = [(0.5, 0.5), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
DEFAULT_LAYOUT: tuple[Box, ...] = (*windows(0.75, CENTRE_AND_CORNERS), *windows(0.55, [(0.5, 0.5)]))


def region_latents(latents: torch.Tensor, layout: Sequence[Box]) -> torch.Tensor:
    """(N, C, H, W) latents -> (N, len(layout), C, H, W): each region cut from the latent
    (whole latent cells, at least one) and resized back to H x W."""
    n, c, h, w = latents.shape
    out = []
    for x0, y0, x1, y1 in layout:
        left, top = round(x0 * w), round(y0 * h)
        right, bottom = max(left + 1, round(x1 * w)), max(top + 1, round(y1 * h))
        crop = latents[:, :, top:bottom, left:right]
        out.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False))
    return torch.stack(out, dim=1) if out else latents.new_zeros((n, 0, c, h, w))
