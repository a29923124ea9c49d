"""Synthetic local inpainting: five mask-region types x several fill methods.

Ground truth for the inpainting detector and localizer (issue 4), built from
the allowed images. Mask types follow End4's benchmark of region shapes:

* ``rectangle``, ``ellipse``: object-removal boxes and blobs;
* ``brush``: free-form strokes, as drawn in inpainting UIs;
* ``polygon``: an object-like irregular region;
* ``border``: a large band along one edge (outpainting-like).

Fill methods (``FILLS``): OpenCV Telea and Navier-Stokes inpainting, a patch
copied from elsewhere in the image and Poisson-blended, and a smooth harmonic
fill with matched grain. ``UNSEEN_MASKS`` / ``UNSEEN_FILLS`` are kept out of
training and reported separately, End4's unseen-pattern protocol.

Every example, real or inpainted, goes through ``finish`` (the same ordinary
edits and the same JPEG encoding) so a detector cannot learn "edited" or
"PNG" = inpainted.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

MASKS = ["rectangle", "ellipse", "brush", "polygon", "border"]
FILLS = ["telea", "navier_stokes", "patch_poisson", "smooth"]
UNSEEN_MASKS = ["polygon"]
UNSEEN_FILLS = ["smooth"]


def make_mask(kind: str, width: int, height: int, rng: np.random.Generator,
              area: tuple[float, float] = (0.02, 0.25)) -> np.ndarray:
    """A boolean (height, width) mask of the given region type, covering roughly ``area`` of the image."""
    target = rng.uniform(*area) * width * height
    mask = np.zeros((height, width), np.uint8)
    if kind == "rectangle":
        aspect = rng.uniform(0.5, 2.0)
        w = int(min(width * 0.9, np.sqrt(target * aspect)))
        h = int(min(height * 0.9, target / max(w, 1)))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        mask[y:y + h, x:x + w] = 1
    elif kind == "ellipse":
        aspect = rng.uniform(0.5, 2.0)
        a = np.sqrt(target * aspect / np.pi)
        b = target / (np.pi * a)
        a, b = min(a, width * 0.45), min(b, height * 0.45)
        center = (int(rng.uniform(a, width - a)), int(rng.uniform(b, height - b)))
        cv2.ellipse(mask, center, (int(a), int(b)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == "brush":
        thickness = max(3, int(np.sqrt(target) * rng.uniform(0.12, 0.25)))
        x, y = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        while mask.sum() < target:
            angle = rng.uniform(0, 2 * np.pi)
            for _ in range(int(rng.integers(3, 8))):
                angle += rng.uniform(-0.8, 0.8)
                length = rng.uniform(0.05, 0.2) * max(width, height)
                nx = float(np.clip(x + np.cos(angle) * length, 0, width - 1))
                ny = float(np.clip(y + np.sin(angle) * length, 0, height - 1))
                cv2.line(mask, (int(x), int(y)), (int(nx), int(ny)), 1, thickness)
                x, y = nx, ny
    elif kind == "polygon":
        radius = np.sqrt(target / np.pi)
        cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
        n = int(rng.integers(6, 14))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.6, 1.4, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [np.clip(pts, 0, [width - 1, height - 1]).astype(np.int32)], 1)
    elif kind == "border":
        side = int(rng.integers(4))
        frac = float(np.clip(target / (width * height), 0.08, 0.3))
        if side == 0:
            mask[: int(height * frac)] = 1
        elif side == 1:
            mask[-int(height * frac):] = 1
        elif side == 2:
            mask[:, : int(width * frac)] = 1
        else:
            mask[:, -int(width * frac):] = 1
    else:
        raise ValueError(f"unknown mask type {kind!r}; known: {MASKS}")
    return mask.astype(bool)


def _opencv(flag: int) -> Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]:
    def fill(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        radius = int(rng.integers(3, 9))
        return cv2.inpaint(image, mask.astype(np.uint8) * 255, radius, flag)
    return fill


def patch_poisson(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Content copied from another place in the image, Poisson-blended into the hole."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if (y1 - y0) >= h - 2 or (x1 - x0) >= w - 2:
        return _opencv(cv2.INPAINT_TELEA)(image, mask, rng)  # no room for a source patch
    dy = int(rng.integers(-y0, h - y1 + 1))
    dx = int(rng.integers(-x0, w - x1 + 1))
    if abs(dy) < (y1 - y0) // 2 and abs(dx) < (x1 - x0) // 2:
        dx = (x1 - x0) if x1 + (x1 - x0) <= w else -(x1 - x0)
        dx = int(np.clip(dx, -x0, w - x1))
    source = np.roll(image, shift=(-dy, -dx), axis=(0, 1))
    # seamlessClone wants the mask away from the image border.
    m = mask.astype(np.uint8) * 255
    m[0, :] = m[-1, :] = 0
    m[:, 0] = m[:, -1] = 0
    if m.sum() == 0:
        return image.copy()
    ys, xs = np.nonzero(m)
    center = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
    out = cv2.seamlessClone(source, image, m, center, cv2.NORMAL_CLONE)
    out[~mask] = image[~mask]
    return out


def smooth(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Harmonic fill from the hole's boundary (iterated blur with known pixels held), plus matched grain."""
    img = image.astype(np.float32)
    known = ~mask
    out = img.copy()
    out[mask] = img[known].mean(0)
    scale = 4
    small = cv2.resize(out, (max(1, out.shape[1] // scale), max(1, out.shape[0] // scale)),
                       interpolation=cv2.INTER_AREA)
    small_known = cv2.resize(known.astype(np.float32), (small.shape[1], small.shape[0])) > 0.99
    small_ref = small.copy()
    for _ in range(200):
        small = cv2.blur(small, (3, 3))
        small[small_known] = small_ref[small_known]
    up = cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_CUBIC)
    grain = img - cv2.GaussianBlur(img, (0, 0), 1.5)
    noise_std = float(grain[known].std()) if known.any() else 0.0
    out[mask] = up[mask] + rng.normal(0, noise_std * rng.uniform(0.5, 1.0), up[mask].shape)
    return np.clip(out, 0, 255).astype(np.uint8)


FILL_FUNCTIONS = {
    "telea": _opencv(cv2.INPAINT_TELEA),
    "navier_stokes": _opencv(cv2.INPAINT_NS),
    "patch_poisson": patch_poisson,
    "smooth": smooth,
}


@dataclass
class InpaintedExample:
    image: Image.Image
    mask: np.ndarray  # bool (h, w); all False for a real image
    mask_type: str
    fill: str


def inpaint(image: Image.Image, mask_type: str, fill: str, rng: np.random.Generator) -> InpaintedExample:
    arr = np.asarray(image.convert("RGB"))
    mask = make_mask(mask_type, arr.shape[1], arr.shape[0], rng)
    out = FILL_FUNCTIONS[fill](arr, mask, rng)
    return InpaintedExample(Image.fromarray(out), mask, mask_type, fill)


def finish(image: Image.Image, mask: np.ndarray, rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """The same ordinary edits and encoding for real and inpainted images.

    Sometimes a global edit (resize, blur, colour), always JPEG at a random
    quality; the mask follows any resize. Returns (JPEG bytes, mask)."""
    im = image.convert("RGB")
    m = Image.fromarray(mask.astype(np.uint8) * 255)
    roll = rng.random()
    if roll < 0.2:
        s = rng.uniform(0.5, 0.9)
        size = (max(32, int(im.width * s)), max(32, int(im.height * s)))
        im, m = im.resize(size, Image.Resampling.BILINEAR), m.resize(size, Image.Resampling.NEAREST)
    elif roll < 0.35:
        arr = np.asarray(im, np.float32)
        arr = cv2.GaussianBlur(arr, (0, 0), rng.uniform(0.5, 1.5))
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    elif roll < 0.5:
        arr = np.asarray(im, np.float32) * rng.uniform(0.8, 1.2, 3) + rng.uniform(-15, 15, 3)
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=int(rng.integers(75, 96)))
    return buf.getvalue(), np.asarray(m) > 127


#: Global edits for the "globally edited, not inpainted" negatives: every edit
#: family of ``training.edits`` except overlays (which are local by nature).
GLOBAL_EDIT_FAMILIES = ["tone", "palette", "smooth_sharpen", "noise_recompress", "restyle", "cartoon", "film",
                        "crop_resize", "flip", "recompress"]


#: Mean absolute change (0-255) a fill must make inside its mask to count as inpainting.
MIN_CHANGE = 8.0
MAX_TRIES = 8


def region_change(original: Image.Image, example: InpaintedExample) -> float:
    """Mean absolute difference between the original and the filled pixels, inside the mask."""
    if example.image.size != original.size or not example.mask.any():
        return 0.0
    a = np.asarray(original.convert("RGB"), np.float32)[example.mask]
    b = np.asarray(example.image, np.float32)[example.mask]
    return float(np.abs(a - b).mean())


@dataclass
class Sample:
    """One finished example: what a query would be, and its ground truth."""
    jpeg: bytes
    mask: np.ndarray  # bool (h, w) at the JPEG's size; all False when not inpainted
    inpainted: bool
    mask_type: str = ""
    fill: str = ""
    global_edit: str = ""
    #: Index of the photo it was cut from, in the list a benchmark drew from (-1: not recorded).
    source: int = -1


def make_sample(photo: Image.Image, rng: np.random.Generator, *, inpainted: bool,
                masks: list[str] = MASKS, fills: list[str] = FILLS, global_edit: str = "",
                sizes: tuple[int, ...] = (256, 320, 384, 512), min_change: float = MIN_CHANGE) -> Sample:
    """A random crop of ``photo``, inpainted or not, optionally globally edited, then ``finish``-ed."""
    from training.data import random_crop
    from training.edits import apply

    if inpainted and global_edit == "crop_resize":
        raise ValueError("crop_resize moves the inpainted region; use it on pristine samples only")
    im = random_crop(photo, rng, int(rng.choice(sizes)), min_frac=0.3)
    mask = np.zeros((im.height, im.width), bool)
    mask_type = fill = ""
    if inpainted:
        # A fill that reproduces what was there (clear sky, flat wallpaper) manipulates
        # nothing: such a "positive" is label noise. Retry (new crop, new mask) until the
        # painted region really changed, keeping the most changed attempt.
        best = None
        for _ in range(MAX_TRIES):
            mask_type, fill = str(rng.choice(masks)), str(rng.choice(fills))
            example = inpaint(im, mask_type, fill, rng)
            change = region_change(im, example)
            if best is None or change > best[0]:
                best = (change, example)
            if change >= min_change:
                break
            im = random_crop(photo, rng, int(rng.choice(sizes)), min_frac=0.3)
        example = best[1]
        im, mask, mask_type, fill = example.image, example.mask, example.mask_type, example.fill
    if global_edit:
        edited = apply(global_edit, im, int(rng.integers(1 << 31)))
        if edited.size != im.size:  # geometric edits: the ground truth would move; keep it simple
            edited = edited.resize(im.size, Image.Resampling.BICUBIC)
        if global_edit == "flip":
            mask = mask[:, ::-1].copy()
        im = edited
    data, mask = finish(im, mask, rng)
    return Sample(data, mask, inpainted, mask_type, fill, global_edit)
