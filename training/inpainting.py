"""Synthetic local inpainting: five mask-region types x several fill methods.

Ground truth for the inpainting detector and localizer (issue 4), built from
the allowed images. Mask types follow End4's benchmark of region shapes:

* ``rectangle``, ``ellipse``: object-removal boxes and blobs;
* ``brush``: free-form strokes, as drawn in inpainting UIs;
* ``polygon``: an object-like irregular region;
* ``border``: a large band along one edge (outpainting-like).

Fill methods (``FILLS``): OpenCV Telea and Navier-Stokes inpainting, a patch
copied from elsewhere in the image and Poisson-blended, a latent fill (the
region re-synthesised in the shared VAE's latent space and decoded, what a
diffusion inpainting pipeline pastes back) and a smooth harmonic fill with
matched grain. A sixth, ``cnn`` (a small learned inpainter,
``training.cnn_inpainter``), is a training-only fill (``TRAINING_ONLY_FILLS``).
``UNSEEN_MASKS`` / ``UNSEEN_FILLS`` are kept out of training and
reported separately, End4's unseen-pattern protocol.

Every example, real or inpainted, goes through ``finish`` (the same ordinary
edits and the same JPEG encoding) so a detector cannot learn "edited" or
"PNG" = inpainted.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from origin_id.models.weights import load_model
from training.cnn_inpainter import DEFAULT_WEIGHTS, FORMAT, CnnInpainter, CnnInpainterConfig, weights_digest

MASKS = ["rectangle", "ellipse", "brush", "polygon", "border"]
FILLS = ["telea", "navier_stokes", "patch_poisson", "latent", "smooth"]
UNSEEN_MASKS = ["polygon"]
SEEN_MASKS = [m for m in MASKS if m not in UNSEEN_MASKS]
UNSEEN_FILLS = ["smooth"]
#: Fills that only make training samples (``training.train_detectors --cnn-samples``): not in
#: ``FILLS``, so the benchmark's seen and unseen groups never draw them.
TRAINING_ONLY_FILLS = ["cnn"]


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


def relax(values: np.ndarray, known: np.ndarray, iterations: int) -> np.ndarray:
    """A harmonic fill by relaxation: ``values`` (H, W[, C], float32) blurred ``iterations``
    times with the ``known`` (H, W) cells held at their values."""
    held = values[known]
    for _ in range(iterations):
        values = cv2.blur(values, (3, 3))
        values[known] = held
    return values


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
    up = cv2.resize(relax(small, small_known, 200), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_CUBIC)
    grain = img - cv2.GaussianBlur(img, (0, 0), 1.5)
    noise_std = float(grain[known].std()) if known.any() else 0.0
    out[mask] = up[mask] + rng.normal(0, noise_std * rng.uniform(0.5, 1.0), up[mask].shape)
    return np.clip(out, 0, 255).astype(np.uint8)


#: The VAE ``latent`` fills decode with: the bundled one unless ``set_fill_vae`` names another.
DEFAULT_FILL_VAE = "indexer/default_model/vae"
_fill_vae: list[torch.nn.Module] = []


def set_fill_vae(vae: torch.nn.Module) -> None:
    """Use ``vae`` for ``latent`` fills (training passes the VAE the detectors are trained on)."""
    _fill_vae[:] = [vae.eval()]


def _vae() -> torch.nn.Module:
    if not _fill_vae:
        from origin_id.models.vae import load_vae

        set_fill_vae(load_vae(DEFAULT_FILL_VAE))
    return _fill_vae[0]


@torch.inference_mode()
def latent(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The hole re-synthesised in the VAE's latent space, decoded and pasted back with a feathered edge.

    A stand-in for diffusion inpainting (no pretrained inpainting model can be had here): the
    latent cells under the hole get a harmonic fill from the known cells plus noise of up to
    half the latents' own local texture level, the decoder turns that into content with the
    decoder's texture, and the result is blended in over a Gaussian-feathered edge as
    inpainting pipelines do (so pixels just outside the hole change a little too). As a fourth
    seen fill it raised the detector's AUC on the held-out smooth fill (docs/inpainting-history.md)."""
    vae = _vae()
    h, w = mask.shape
    height, width = max(8, h // 8 * 8), max(8, w // 8 * 8)
    x = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1
    z = vae.encode(x).latent_dist.mean[0].numpy()
    hole = cv2.resize(mask.astype(np.float32), (width // 8, height // 8), interpolation=cv2.INTER_AREA) > 0.05
    if not hole.any():
        hole = cv2.resize(mask.astype(np.uint8), (width // 8, height // 8), interpolation=cv2.INTER_NEAREST) > 0
    known = ~hole
    filled = z.copy()
    for c, ref in enumerate(z):
        filled[c][hole] = ref[known].mean() if known.any() else 0.0
        filled[c] = relax(filled[c], known, 100)
        texture = ref - cv2.blur(ref, (3, 3))  # the local texture level, not the content's range
        spread = float(texture[known].std()) if known.any() else 0.1
        filled[c][hole] += rng.normal(0, spread * rng.uniform(0.0, 0.5), int(hole.sum()))
    out = vae.decode(torch.from_numpy(filled)[None]).sample.clamp(-1, 1)[0].permute(1, 2, 0).numpy()
    out = cv2.resize(((out + 1) * 127.5).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), float(rng.uniform(1.0, 3.0)))[..., None]
    soft = np.maximum(soft, mask[..., None].astype(np.float32))  # the hole replaced, its edge blended
    return np.clip(image.astype(np.float32) * (1 - soft) + out * soft, 0, 255).astype(np.uint8)


@functools.cache
def _inpainter() -> CnnInpainter:
    return load_model(CnnInpainter, CnnInpainterConfig, DEFAULT_WEIGHTS, FORMAT)


def cnn(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The hole predicted by the small CNN inpainter (``training.cnn_inpainter``, its bundled
    weights, loaded once). Deterministic: ``rng`` is unused."""
    return _inpainter().fill(image, mask)


def fill_version(fill: str) -> str:
    """What, besides its code, decides what ``fill`` paints, for the names of cached samples:
    the CNN inpainter's weights (retrained weights must not reuse the old fills); "" for the
    others (the ``latent`` fill's VAE is named by the caches' VAE fingerprint)."""
    return weights_digest(DEFAULT_WEIGHTS) if fill == "cnn" else ""


FILL_FUNCTIONS = {
    "telea": _opencv(cv2.INPAINT_TELEA),
    "navier_stokes": _opencv(cv2.INPAINT_NS),
    "patch_poisson": patch_poisson,
    "latent": latent,
    "smooth": smooth,
    "cnn": cnn,
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
