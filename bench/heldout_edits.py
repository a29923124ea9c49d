"""Query edits of the held-out evaluation, made by code that no training of this project
uses: albumentations, OpenCV's photo module and PIL drawing - never ``training/edits.py``.

Each edit is ``(image, rng) -> image`` on RGB PIL images; ``FAMILIES`` groups them:

* copy: crops keeping 50-90% of each side, a centre crop keeping 60%, pad to square and a
  rotation up to 12 degrees, the picture inside a screenshot or social-media post,
  captions and stickers over it, grayscale, hue shift, strong JPEG, downscaling;
* re-render: painterly stylisation, colour pencil sketch, strong colour grading with
  posterisation, superpixel abstraction, heavy noise then denoising;
* combined: a re-render followed by a copy edit;
* inpaint: a region (5-20% of the area) filled in by OpenCV inpainting.
"""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]


def _album(transform: A.BasicTransform) -> Edit:
    pipeline = A.Compose([transform])

    def edit(im: Image.Image, rng: np.random.Generator) -> Image.Image:
        pipeline.set_random_seed(int(rng.integers(2**31)))
        return Image.fromarray(pipeline(image=np.asarray(im))["image"])
    return edit


def crop(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    fw, fh = rng.uniform(0.5, 0.9, 2)
    cw, ch = int(w * fw), int(h * fh)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return im.crop((x, y, x + cw, y + ch))


def centre_crop(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = im.size
    return im.crop((int(w * 0.2), int(h * 0.2), int(w * 0.8), int(h * 0.8)))


def pad_rotate(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    side = max(im.size)
    fill = tuple(int(v) for v in rng.integers(0, 256, 3))
    square = Image.new("RGB", (side, side), fill)
    square.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    angle = float(rng.uniform(6, 12) * rng.choice([-1, 1]))
    return Image.fromarray(A.Compose([A.Rotate(limit=(angle, angle), border_mode=cv2.BORDER_CONSTANT, fill=fill,
                                               p=1.0)])(image=np.asarray(square))["image"])


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_lines(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: np.random.Generator,
                colour: tuple[int, int, int]) -> None:
    x0, y0, _, y1 = box
    y = y0
    words = ["breaking", "news", "photo", "today", "shared", "viral", "look", "this", "amazing", "view", "2026"]
    while y < y1 - 14:
        line = " ".join(rng.choice(words, int(rng.integers(3, 8))))
        draw.text((x0, y), line, fill=colour, font=_font(14))
        y += 20


def screenshot(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The picture inside a social-media post or an app window, at 40-70% of the frame's width."""
    dark = bool(rng.integers(2))
    bg, fg = ((21, 32, 43), (230, 230, 230)) if dark else ((255, 255, 255), (20, 20, 20))
    width = int(rng.integers(720, 1100))
    share = rng.uniform(0.55, 0.85)
    pic = im.copy()
    pic.thumbnail((int(width * share), int(width * share * 1.2)), Image.LANCZOS)
    header, footer = int(rng.integers(70, 140)), int(rng.integers(60, 160))
    frame = Image.new("RGB", (width, header + pic.height + footer + 20), bg)
    draw = ImageDraw.Draw(frame)
    draw.ellipse((16, 14, 62, 60), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw.text((76, 18), "@" + "".join(rng.choice(list("abcdefghijklmnop"), 9)), fill=fg, font=_font(18))
    _text_lines(draw, (16, 66, width - 16, header), rng, fg)
    x = int(rng.integers(16, max(17, width - pic.width - 16)))
    frame.paste(pic, (x, header))
    _text_lines(draw, (16, header + pic.height + 10, width - 16, frame.height), rng, fg)
    if rng.integers(2):  # app chrome: a title bar
        draw.rectangle((0, 0, width, 8), fill=(90, 90, 200))
    return frame


def overlay(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A caption, a watermark and a few stickers drawn over the picture."""
    out = im.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = out.size
    size = max(12, h // 12)
    draw.rectangle((0, h - size - 12, w, h), fill=(0, 0, 0, 150))
    draw.text((8, h - size - 6), "WHEN YOU SEE IT", fill=(255, 255, 255, 255), font=_font(size))
    draw.text((int(w * rng.uniform(0.3, 0.6)), int(h * rng.uniform(0.1, 0.4))), "(c) stock",
              fill=(255, 255, 255, 110), font=_font(max(12, h // 9)))
    for _ in range(int(rng.integers(1, 4))):
        r = int(min(w, h) * rng.uniform(0.05, 0.1))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*(int(v) for v in rng.integers(0, 256, 3)), 255))
    return Image.alpha_composite(out, layer).convert("RGB")


grayscale = _album(A.ToGray(num_output_channels=3, p=1.0))
hue = _album(A.HueSaturationValue(hue_shift_limit=(25, 70), sat_shift_limit=(-10, 30), val_shift_limit=(-10, 10),
                                  p=1.0))
strong_jpeg = _album(A.ImageCompression(quality_range=(15, 35), p=1.0))
downscale = _album(A.Downscale(scale_range=(0.2, 0.4), p=1.0))


def stylize(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    bgr = cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR)
    out = cv2.stylization(bgr, sigma_s=float(rng.uniform(40, 90)), sigma_r=float(rng.uniform(0.3, 0.6)))
    return Image.fromarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB))


def pencil(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    bgr = cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2BGR)
    _, colour = cv2.pencilSketch(bgr, sigma_s=float(rng.uniform(40, 80)), sigma_r=0.07,
                                 shade_factor=float(rng.uniform(0.03, 0.06)))
    return Image.fromarray(cv2.cvtColor(colour, cv2.COLOR_BGR2RGB))


colour_grade = _album(A.Compose([
    A.PlanckianJitter(mode="blackbody", p=1.0),
    A.ColorJitter(brightness=(0.7, 1.3), contrast=(0.6, 1.5), saturation=(0.3, 1.8), hue=(-0.08, 0.08), p=1.0),
    A.Posterize(num_bits=(3, 4), p=1.0),
]))
superpixels = _album(A.Superpixels(p_replace=(0.5, 0.8), n_segments=(150, 400), max_size=256, p=1.0))


def noise_denoise(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    noisy = _album(A.GaussNoise(std_range=(0.12, 0.22), p=1.0))(im, rng)
    bgr = cv2.cvtColor(np.asarray(noisy), cv2.COLOR_RGB2BGR)
    out = cv2.fastNlMeansDenoisingColored(bgr, None, h=22, hColor=22, templateWindowSize=7, searchWindowSize=15)
    return Image.fromarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB))


def inpaint(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A blob covering 5-20% of the picture filled in by OpenCV (Telea or Navier-Stokes)."""
    rgb = np.asarray(im).copy()
    h, w = rgb.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    target = rng.uniform(0.05, 0.2) * h * w
    cx, cy = int(rng.integers(w // 5, 4 * w // 5)), int(rng.integers(h // 5, 4 * h // 5))
    while (mask > 0).sum() < target:
        rx, ry = int(rng.integers(w // 20 + 1, w // 6 + 2)), int(rng.integers(h // 20 + 1, h // 6 + 2))
        cv2.ellipse(mask, (cx, cy), (rx, ry), float(rng.uniform(0, 180)), 0, 360, 255, -1)
        cx = int(np.clip(cx + rng.integers(-rx, rx + 1), 0, w - 1))
        cy = int(np.clip(cy + rng.integers(-ry, ry + 1), 0, h - 1))
    method = cv2.INPAINT_TELEA if rng.integers(2) else cv2.INPAINT_NS
    bgr = cv2.inpaint(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, 5, method)
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


COPY: dict[str, Edit] = {
    "crop 50-90%": crop, "centre crop 60%": centre_crop, "pad + rotate": pad_rotate,
    "in a screenshot / post": screenshot, "caption + stickers": overlay, "grayscale": grayscale,
    "hue shift": hue, "strong JPEG": strong_jpeg, "downscale": downscale,
}
RERENDER: dict[str, Edit] = {
    "stylization": stylize, "pencil sketch": pencil, "colour grade + posterize": colour_grade,
    "superpixels": superpixels, "noise + denoise": noise_denoise,
}
#: family -> kind, for the report's groups.
KINDS = {**{name: "copy" for name in COPY}, **{name: "re-render" for name in RERENDER},
         "re-render + copy": "combined", "inpainted": "inpaint", "no origin": "no-origin"}


def combined(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    rerender = list(RERENDER.values())[int(rng.integers(len(RERENDER)))]
    copy = list(COPY.values())[int(rng.integers(len(COPY)))]
    return copy(rerender(im, rng), rng)


def any_edit(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """For no-origin queries: untouched, or any single or combined edit."""
    choices = [None, *COPY.values(), *RERENDER.values(), combined]
    edit = choices[int(rng.integers(len(choices)))]
    return im if edit is None else edit(im, rng)


FAMILIES: dict[str, Edit] = {**COPY, **RERENDER, "re-render + copy": combined, "inpainted": inpaint}


def apply(family: str, im: Image.Image, seed: int) -> Image.Image:
    edit = any_edit if family == "no origin" else FAMILIES[family]
    return edit(im.convert("RGB"), np.random.default_rng(seed)).convert("RGB")
