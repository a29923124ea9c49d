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
#: A bar along an edge (title bar, rule) up to this share of the side is looked past.
MAX_BAR = 0.04
#: ``_dense_box``: the neighbourhood (pixels of the <= 256 px copy) and the share of it
#: that must differ from the frame for a pixel to count as picture.
DENSE_WINDOW = 5
DENSE_SHARE = 0.9
#: The most of a frame (around the block) that may differ from its colour: text, icons.
FRAME_UNLIKE_MAX = 0.3
MIN_KEPT_AREA = 0.08


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


def _border_depth(lines: np.ndarray) -> int:
    """How deep the border along the edge at ``lines[0]`` goes: a run of background of the
    edge line's colour, or - past a thin bar of another colour (an app's title bar, a
    coloured rule) - a run of the colour found just inside it."""
    depth = _background_run(lines, np.median(lines[0], 0))
    if depth >= MIN_TRIM * len(lines):
        return depth
    # A thin bar first? Past it: the first line unlike the edge line's colour and like the
    # next line's (resizing blends the line between the two).
    limit = max(3, int(len(lines) * MAX_BAR))
    colours = np.median(lines[:limit], axis=1)
    unlike_edge = np.abs(colours - colours[0]).max(-1) > TOLERANCE
    like_next = np.abs(colours[1:] - colours[:-1]).max(-1) <= TOLERANCE
    past = np.flatnonzero(unlike_edge[:-1] & like_next)
    if len(past):
        start = int(past[0])
        inner = _background_run(lines[start:], colours[start])
        if inner >= MIN_TRIM * len(lines):
            return start + inner
    return depth


def _bands(a: np.ndarray, rows_first: bool) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) border depths, one axis first and the other within the
    first's band: a picture narrower than its frame leaves rows that are mostly frame, so
    its top and bottom show only once the frame's side columns are set aside."""
    h, w = a.shape[:2]
    if rows_first:
        top, bottom = _border_depth(a), _border_depth(a[::-1])
        band = a[top:h - bottom] if top + bottom < h else a
        return top, bottom, _border_depth(band.transpose(1, 0, 2)), _border_depth(band.transpose(1, 0, 2)[::-1])
    left, right = _border_depth(a.transpose(1, 0, 2)), _border_depth(a.transpose(1, 0, 2)[::-1])
    band = a[:, left:w - right] if left + right < w else a
    return _border_depth(band), _border_depth(band[::-1]), left, right


def _worth_trimming(top: int, bottom: int, left: int, right: int, h: int, w: int) -> bool:
    top, bottom = (v if v >= MIN_TRIM * h else 0 for v in (top, bottom))
    left, right = (v if v >= MIN_TRIM * w else 0 for v in (left, right))
    if not (top or bottom or left or right) or top + bottom >= h or left + right >= w:
        return False
    return (h - top - bottom) * (w - left - right) >= MIN_KEPT_AREA * h * w


def _picture_box(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """The borders to trim (top, bottom, left, right): of the two orders' valid readings the
    one that keeps more (a uniform stretch of the picture itself must not be cut away), or
    None when neither finds borders that leave enough picture."""
    h, w = a.shape[:2]
    found = []
    for rows_first in (True, False):
        top, bottom, left, right = _bands(a, rows_first)
        top, bottom = (v if v >= MIN_TRIM * h else 0 for v in (top, bottom))
        left, right = (v if v >= MIN_TRIM * w else 0 for v in (left, right))
        if not (top or bottom or left or right) or top + bottom >= h or left + right >= w:
            continue
        kept = (h - top - bottom) * (w - left - right)
        if kept >= MIN_KEPT_AREA * h * w:
            found.append((kept, (top, bottom, left, right)))
    return max(found)[1] if found else None


def _dense_box(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) around the largest dense block of pixels unlike the frame:
    for a picture that is a small part of a post or screenshot, where every row and column
    through it is still mostly frame. The frame's colour is the median of the outer ring;
    a pixel is *content* when nearly all of its ``DENSE_WINDOW`` neighbourhood differs from
    it (glyphs of text and thin rules are too sparse to count); the box is the run of rows,
    then of columns within them, whose content reaches half of the densest row's."""
    h, w = a.shape[:2]
    ring = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    unlike = (np.abs(a - np.median(ring, 0)).max(-1) > TOLERANCE).astype(np.float32)
    k = DENSE_WINDOW
    if h <= 2 * k or w <= 2 * k:
        return None
    integral = np.pad(unlike.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    density = (integral[k:, k:] - integral[:-k, k:] - integral[k:, :-k] + integral[:-k, :-k]) / (k * k)
    content = np.zeros((h, w), bool)
    content[k // 2:k // 2 + density.shape[0], k // 2:k // 2 + density.shape[1]] = density > DENSE_SHARE

    def run(counts: np.ndarray) -> tuple[int, int] | None:
        if counts.max() <= 0:
            return None
        strong = counts >= 0.5 * counts.max()
        peak = int(counts.argmax())
        start, end = peak, peak
        while start > 0 and strong[start - 1]:
            start -= 1
        while end < len(counts) - 1 and strong[end + 1]:
            end += 1
        return start, end + 1

    rows = run(content.sum(1))
    if rows is None:
        return None
    cols = run(content[rows[0]:rows[1]].sum(0))
    if cols is None:
        return None
    # The window shaves k/2 off each side of the block: give it back.
    pad = k // 2
    top, bottom = max(0, rows[0] - pad), max(0, h - rows[1] - pad)
    left, right = max(0, cols[0] - pad), max(0, w - cols[1] - pad)
    # Around a picture in a frame lies frame: mostly its colour, text and small icons. Around
    # a block of a plain photo lies more photo: then there is no frame to trim.
    outside = np.ones((h, w), bool)
    outside[top:h - bottom, left:w - right] = False
    if not outside.any() or unlike[outside].mean() > FRAME_UNLIKE_MAX:
        return None
    return top, bottom, left, right


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
    step = 2 if max(h, w) > 256 else 1  # the dense search needs no more than 256 px
    box = _dense_box(a[::step, ::step])
    box = tuple(v * step for v in box) if box is not None else _picture_box(a)
    if box is None:
        return None
    top, bottom, left, right = box
    if not _worth_trimming(top, bottom, left, right, h, w):
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
    """``query_views`` preprocessed for the VAE: (views, 3, 256, 256), in the same order."""
    return views_batch(query_views(image, flip=False, trim=trim), flip)


def views_batch(views: list[Image.Image], flip: bool = True) -> torch.Tensor:
    """Unmirrored views preprocessed for the VAE, followed by their mirror images when ``flip``.

    The mirror views are the other views' tensors flipped: mirroring commutes with the
    resize (the same pixels, exactly), and a large query then needs one resize per view
    instead of two, and no full-size mirror image."""
    x = preprocess_arrays(views)
    return to_tensor(np.concatenate([x, x[:, :, ::-1]]) if flip else x)
