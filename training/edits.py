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


def regenerate(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """An img2img-like regeneration: fine detail re-synthesised, tones shifted, geometry drifted.

    Diffusion re-renders keep the layout but redraw texture from noise and do not
    keep pixels in place: low-pass content + new synthetic grain, a local-contrast
    and hue change, and a smooth random warp of a few pixels."""
    arr = np.asarray(im.convert("RGB"), np.float32)
    h, w = arr.shape[:2]
    s = rng.uniform(0.2, 0.35)
    small = Image.fromarray(arr.astype(np.uint8)).resize((max(8, int(w * s)), max(8, int(h * s))),
                                                          Image.Resampling.BILINEAR)
    base = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), np.float32)
    grain = rng.normal(0, 1, (max(2, h // 2), max(2, w // 2), 1)).astype(np.float32)
    grain = np.asarray(Image.fromarray(grain[..., 0]).resize((w, h), Image.Resampling.BICUBIC))[..., None]
    out = base + grain * rng.uniform(6, 14)
    mean = out.mean((0, 1), keepdims=True)
    out = (out - mean) * rng.uniform(1.1, 1.4) + mean + rng.uniform(-20, 20, 3)
    out = np.asarray(ImageEnhance.Color(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)))
                     .enhance(rng.uniform(0.6, 1.5)), np.float32)
    # Smooth displacement field of a few pixels (coarse random grid, upsampled).
    amp = rng.uniform(0.01, 0.025) * min(w, h)
    field = [np.asarray(Image.fromarray(rng.normal(0, 1, (4, 4)).astype(np.float32))
                        .resize((w, h), Image.Resampling.BICUBIC)) * amp for _ in range(2)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sx = np.clip(np.round(xx + field[0]), 0, w - 1).astype(int)
    sy = np.clip(np.round(yy + field[1]), 0, h - 1).astype(int)
    return jpeg(Image.fromarray(np.clip(out[sy, sx], 0, 255).astype(np.uint8)), int(rng.integers(60, 90)))


def letterbox(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The picture inside other pixels: letter/pillar-boxed, on a canvas, or under screenshot chrome."""
    w, h = im.size
    kind = int(rng.integers(3))
    if kind == 0:  # letterbox / pillarbox to a video aspect ratio, black bars
        aspect = 16 / 9 if w / h < 16 / 9 else 9 / 16
        cw, ch = (max(w, int(h * aspect)), h) if aspect > 1 else (w, max(h, int(w / aspect)))
        canvas = Image.new("RGB", (cw, ch), (0, 0, 0))
    elif kind == 1:  # a flat-coloured canvas with uneven margins
        cw, ch = int(w * rng.uniform(1.15, 1.6)), int(h * rng.uniform(1.15, 1.6))
        canvas = Image.new("RGB", (cw, ch), tuple(int(c) for c in rng.integers(0, 256, 3)))
    else:  # screenshot: a title bar with "text" on top, thin side margins
        bar = int(h * rng.uniform(0.08, 0.2))
        margin = int(w * rng.uniform(0.0, 0.06))
        cw, ch = w + 2 * margin, h + bar + margin
        grey = int(rng.integers(200, 250))
        canvas = Image.new("RGB", (cw, ch), (grey, grey, grey))
        draw = ImageDraw.Draw(canvas)
        draw.text((int(cw * 0.04), bar // 3), "@someone · 2h   " * 2, fill=(30, 30, 30))
    x = (cw - w) // 2 if kind != 1 else int(rng.integers(0, cw - w + 1))
    y = (ch - h) // 2 if kind == 0 else (int(rng.integers(0, ch - h + 1)) if kind == 1 else ch - h - (cw - w) // 2)
    canvas.paste(im, (x, y))
    return jpeg(canvas, int(rng.integers(70, 95)))


# -- layout- and colour-breaking edits (seen: what W must learn to ignore) -----------

def deep_crop(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A crop keeping 35-80% of each side, anywhere: the picture reposted cut down."""
    w, h = im.size
    fw, fh = rng.uniform(0.35, 0.8), rng.uniform(0.35, 0.8)
    if rng.random() < 0.5:  # same fraction of both sides half of the time
        fh = fw
    cw, ch = max(16, int(w * fw)), max(16, int(h * fh))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((x, y, x + cw, y + ch))


def tilt(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Padded to a square canvas and turned a little (corners filled with one colour)."""
    w, h = im.size
    side = max(w, h)
    fill = tuple(int(c) for c in rng.integers(0, 256, 3))
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(im, ((side - w) // 2, (side - h) // 2))
    angle = float(rng.uniform(4, 20) * rng.choice([-1, 1]))
    return canvas.rotate(angle, resample=Image.Resampling.BILINEAR, expand=bool(rng.random() < 0.5),
                         fillcolor=fill)


def monochrome(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Grey levels (sometimes tinted, sepia-like) with a contrast change."""
    grey = ImageOps.autocontrast(im.convert("L"), cutoff=float(rng.uniform(0, 2)))
    if rng.random() < 0.3:
        dark = tuple(int(c) for c in rng.integers(0, 80, 3))
        light = tuple(int(c) for c in rng.integers(180, 256, 3))
        return ImageOps.colorize(grey, dark, light)
    return grey.convert("RGB")


def hue_turn(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The hue wheel turned by 30-330 degrees, saturation scaled."""
    hsv = np.asarray(im.convert("HSV"), np.int16).copy()
    hsv[..., 0] = (hsv[..., 0] + int(rng.integers(21, 235))) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.4), 0, 255)
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def line_drawing(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A pencil-like drawing: grey levels divided by their blurred inverse (colour dodge),
    sometimes tinted back with a little of the original colour."""
    grey = np.asarray(im.convert("L"), np.float32)
    radius = rng.uniform(2, 6) * max(im.size) / 512
    blurred = np.asarray(Image.fromarray(255 - grey.astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius)),
                         np.float32)
    sketch = np.clip(grey * 255 / np.maximum(1, 255 - blurred), 0, 255)
    out = np.repeat(sketch[..., None], 3, axis=2)
    if rng.random() < 0.4:
        out = out * rng.uniform(0.6, 0.85) + np.asarray(im, np.float32) * rng.uniform(0.15, 0.4)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


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
    Family("regenerate", regenerate, "rerender", False),
    Family("crop_resize", crop_resize, "copy", True),
    Family("overlay", overlay, "copy", True),
    Family("recompress", recompress, "copy", False),
    Family("flip", flip, "copy", False),
    Family("letterbox", letterbox, "copy", False),
    Family("deep_crop", deep_crop, "copy", True),
    Family("tilt", tilt, "copy", True),
    Family("monochrome", monochrome, "rerender", True),
    Family("hue_turn", hue_turn, "rerender", True),
    Family("line_drawing", line_drawing, "rerender", True),
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
