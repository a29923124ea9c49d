"""The project's edit generator: families of edits that make a query from an origin.

No diffusion weights can be downloaded here, so img2img "generators" are
stood in for by families of edits that re-render an image while keeping its
layout (global restyling, palette and tone, smoothing / sharpening, noise +
recompression), next to the copy edits that newsrooms and infringers make
(crop, resize, overlays, flips, JPEG). Each family is a function
``(image, rng) -> image``; ``FAMILIES`` lists them with their kind and
whether training may see them (``seen``). The unseen families are kept out of
training so benchmarks can report generalisation, as ID2 does with unseen
generators.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]


def jpeg_bytes(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    """The image as it looks after a JPEG round trip."""
    return Image.open(io.BytesIO(jpeg_bytes(im, quality))).convert("RGB")


# -- re-rendering families (layout kept) -------------------------------------------

def tone(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.7, 1.4))
    im = ImageEnhance.Color(im).enhance(rng.uniform(0.5, 1.6))
    arr = np.asarray(im, np.float32) / 255.0
    arr = arr ** rng.uniform(0.75, 1.35)
    return Image.fromarray((arr * 255).clip(0, 255).astype(np.uint8))


def palette(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Hue rotation / channel mixing, then a reduced palette: a recolouring."""
    arr = np.asarray(im, np.float32)
    mix = np.eye(3) * rng.uniform(0.6, 1.0) + rng.uniform(-0.25, 0.35, (3, 3))
    arr = arr @ mix.T.astype(np.float32)
    arr = (arr - arr.min()) / (np.ptp(arr) + 1e-6) * 255
    out = Image.fromarray(arr.astype(np.uint8))
    return out.quantize(int(rng.integers(12, 48)), dither=Image.Dither.NONE).convert("RGB")


def smooth_sharpen(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    scale = max(im.size) / 512
    if rng.random() < 0.5:
        return im.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 3.0) * scale))
    return im.filter(ImageFilter.UnsharpMask(radius=rng.uniform(1.5, 4) * scale,
                                             percent=int(rng.integers(120, 300)), threshold=1))


def noise_recompress(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(im, np.float32)
    arr = arr + rng.normal(0, rng.uniform(6, 20), arr.shape)
    return jpeg(Image.fromarray(arr.clip(0, 255).astype(np.uint8)), rng.integers(25, 60))


def restyle(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Painterly re-render: downscale-upscale, mode filter, posterize, tone shift."""
    w, h = im.size
    f = rng.uniform(0.2, 0.45)
    small = im.resize((max(8, int(w * f)), max(8, int(h * f))), Image.Resampling.BILINEAR)
    small = small.filter(ImageFilter.ModeFilter(int(rng.choice([3, 5]))))
    out = small.resize((w, h), Image.Resampling.BICUBIC)
    out = ImageOps.posterize(out, int(rng.integers(3, 6)))
    return tone(out, rng)


def cartoon(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Flat colour regions with dark edges (held out from training)."""
    flat = im.filter(ImageFilter.MedianFilter(5)).quantize(int(rng.integers(6, 16))).convert("RGB")
    edges = im.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 40 else 0)
    edges = edges.filter(ImageFilter.MaxFilter(3))
    black = Image.new("RGB", im.size, (20, 20, 20))
    return Image.composite(black, flat, edges)


def film(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Warm/cool grade, vignette and grain (held out from training)."""
    arr = np.asarray(im, np.float32)
    arr = arr * rng.uniform(0.85, 1.15, 3) + rng.uniform(-20, 20, 3)
    h, w = arr.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    arr *= (1 - rng.uniform(0.3, 0.6) * np.clip(r - 0.4, 0, None))[..., None]
    arr += rng.normal(0, rng.uniform(4, 12), (h, w, 1))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


# -- copy edits ---------------------------------------------------------------------

def crop_resize(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    frac = np.sqrt(rng.uniform(0.7, 0.95))
    cw, ch = int(w * frac), int(h * frac)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = im.crop((x, y, x + cw, y + ch))
    s = rng.uniform(0.4, 1.2)
    return out.resize((max(16, int(cw * s)), max(16, int(ch * s))), Image.Resampling.BILINEAR)


def overlay(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Caption bar, logo-like shapes and text drawn over the image."""
    out = im.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    if rng.random() < 0.6:
        bar = int(h * rng.uniform(0.08, 0.18))
        y0 = 0 if rng.random() < 0.5 else h - bar
        draw.rectangle([0, y0, w, y0 + bar], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw.text((int(w * 0.05), y0 + bar // 3), "BREAKING " * 3, fill=(255, 255, 255))
    for _ in range(int(rng.integers(1, 4))):
        s = int(min(w, h) * rng.uniform(0.08, 0.2))
        x, y = int(rng.integers(0, max(1, w - s))), int(rng.integers(0, max(1, h - s)))
        draw.ellipse([x, y, x + s, y + s], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return out


def flip(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    return tone(ImageOps.mirror(im), rng) if rng.random() < 0.5 else ImageOps.mirror(im)


def recompress(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    s = rng.uniform(0.3, 0.8)
    small = im.resize((max(16, int(w * s)), max(16, int(h * s))), Image.Resampling.BILINEAR)
    return jpeg(small, rng.integers(20, 50))


@dataclass(frozen=True)
class Family:
    name: str
    edit: Edit
    kind: str  # "rerender" or "copy"
    seen: bool  # may training use it?


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("tone", tone, "rerender", True),
    Family("palette", palette, "rerender", True),
    Family("smooth_sharpen", smooth_sharpen, "rerender", True),
    Family("noise_recompress", noise_recompress, "rerender", True),
    Family("restyle", restyle, "rerender", True),
    Family("cartoon", cartoon, "rerender", False),
    Family("film", film, "rerender", False),
    Family("crop_resize", crop_resize, "copy", True),
    Family("overlay", overlay, "copy", True),
    Family("recompress", recompress, "copy", False),
    Family("flip", flip, "copy", False),
]}

SEEN = [f for f in FAMILIES.values() if f.seen]
UNSEEN = [f for f in FAMILIES.values() if not f.seen]


def apply(name: str, im: Image.Image, seed: int) -> Image.Image:
    return FAMILIES[name].edit(im.convert("RGB"), np.random.default_rng(seed)).convert("RGB")


def random_seen_edit(im: Image.Image, rng: np.random.Generator, max_chain: int = 2) -> Image.Image:
    """One or more seen edits chained: the training distribution."""
    out = im.convert("RGB")
    for _ in range(int(rng.integers(1, max_chain + 1))):
        out = SEEN[int(rng.integers(len(SEEN)))].edit(out, rng).convert("RGB")
    return out
