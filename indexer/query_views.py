"""The views of a query image that are embedded and searched.

Copies on the web are often not the picture alone: they are mirrored, or the
picture sits inside other pixels (letterbox bars, a coloured canvas,
screenshot chrome). A linear map on a spatial latent cannot see through
either, so the query is searched as several views and each reference keeps
its best score over all of them (``OriginIndex.search``):

* the query itself;
* its mirror image (``flip``);
* the query with near-uniform borders trimmed (``trim``), only when there are
  borders to trim; one more embedding for such queries, none for the others.

References are stored untouched; only queries get variants, so turning a view
on or off never needs re-indexing.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

from origin_id.models.vae import preprocess_arrays, to_tensor

#: A border row/column is "background" when this share of its pixels is within
#: ``TOLERANCE`` of the border's colour (text in a title bar covers about a third of its rows).
BACKGROUND_SHARE = 0.6
TOLERANCE = 18.0
#: Ignore trims thinner than this share of a side; refuse ones that keep less area.
MIN_TRIM = 0.03
MIN_KEPT_AREA = 0.2


def _background_run(lines: np.ndarray, colour: np.ndarray, chunk: int = 16) -> int:
    """How many leading lines (axis 0 of ``lines``: (n, length, 3)) are background of ``colour``.

    Scanned ``chunk`` lines at a time from the edge: most queries have no border, so
    the first chunk decides (testing the whole image from all four sides was a large
    share of a query's time)."""
    for start in range(0, len(lines), chunk):
        close = np.abs(lines[start:start + chunk] - colour).max(-1) <= TOLERANCE
        ok = close.mean(1) >= BACKGROUND_SHARE
        if not ok.all():
            return start + int(np.argmin(ok))
    return len(lines)


def trim_borders(image: Image.Image) -> Image.Image | None:
    """The image without near-uniform bands along its edges; None when there is nothing to trim."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = min(1.0, 512 / max(rgb.size))
    small = rgb if scale == 1.0 else rgb.resize((max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale))),
                                                Image.Resampling.BILINEAR, reducing_gap=3.0)
    a = np.asarray(small, np.float32)
    h, w = a.shape[:2]
    if h < 16 or w < 16:
        return None
    top = _background_run(a, np.median(a[0], 0))
    bottom = _background_run(a[::-1], np.median(a[-1], 0))
    left = _background_run(a.transpose(1, 0, 2), np.median(a[:, 0], 0))
    right = _background_run(a.transpose(1, 0, 2)[::-1], np.median(a[:, -1], 0))
    top, bottom = (v if v >= MIN_TRIM * h else 0 for v in (top, bottom))
    left, right = (v if v >= MIN_TRIM * w else 0 for v in (left, right))
    if not (top or bottom or left or right):
        return None
    if (h - top - bottom) * (w - left - right) < MIN_KEPT_AREA * h * w or top + bottom >= h or left + right >= w:
        return None
    box = (int(left / scale), int(top / scale), round((w - right) / scale), round((h - bottom) / scale))
    return rgb.crop(box)


def query_views(image: Image.Image, flip: bool = True, trim: bool = True) -> list[Image.Image]:
    views = [image]
    if trim:
        trimmed = trim_borders(image)
        if trimmed is not None:
            views.append(trimmed)
    if flip:
        views += [ImageOps.mirror(v) for v in views]
    return views


def query_batch(image: Image.Image, flip: bool = True, trim: bool = True) -> torch.Tensor:
    """``query_views`` preprocessed for the VAE: (views, 3, 256, 256), in the same order.

    The mirror views are the other views' tensors flipped: mirroring commutes with the
    resize (the same pixels, exactly), and a large query then needs one resize per view
    instead of two, and no full-size mirror image."""
    x = preprocess_arrays(query_views(image, flip=False, trim=trim))
    return to_tensor(np.concatenate([x, x[:, :, ::-1]]) if flip else x)
