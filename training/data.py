"""Images the project may train and develop on, and procedural ones.

Sources, in the order they are listed:

* scikit-image's bundled sample images (no download needed);
* scikit-learn's two sample images, when scikit-learn is installed;
* Debian wallpaper packages unpacked by ``python -m training.fetch_data``
  under ``DATA_DIR/debian`` (gnome-, mate-, sway-backgrounds, desktop-base);
* other Debian releases of the same packages whose wallpapers differ, under
  ``DATA_DIR/debian-releases`` (``training.fetch_data.RELEASES``; GNOME's are
  JPEG XL, decoded by ``pillow-jxl-plugin``). They are listed last, so the
  first set keeps its photos, their order and their splits;
* ``procedural_image(seed)``: deterministic synthetic scenes (shapes, gradients,
  textures) for as many extra distinct images as a job needs;
* ``grainy_image(seed)``: deterministic grain-heavy fields (fractal relief, soft
  blobs and rings, fine grain), the look of micrographs, lunar and other
  textured surfaces that the photos above have few of.

Other image packages on the registries are reserved for independent evaluation
and are deliberately not listed here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

try:  # registers the JPEG XL decoder with PIL (the train and bench extras install it)
    import pillow_jxl
except ImportError:
    pillow_jxl = None

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".jxl"}
DEFAULT_DATA_DIR = Path(os.environ.get("ORIGIN_ID_TRAIN_DATA", ".data/train"))
#: Where ``training.fetch_data`` unpacks the other Debian releases, under the data dir.
RELEASES_DIR = "debian-releases"
#: Smallest side an image must have to be worth cropping from.
MIN_SIDE = 128


def skimage_images() -> list[Path]:
    try:
        import skimage.data
    except ImportError:
        return []
    folder = Path(skimage.data.__file__).parent
    paths = []
    for p in sorted(folder.iterdir()):
        # Skip text rendered on flat colour and other near-binary test patterns.
        if p.suffix.lower() in IMAGE_SUFFIXES and "chessboard" not in p.name:
            paths.append(p)
    return paths


def sklearn_images() -> list[np.ndarray]:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError:
        return []
    return list(load_sample_images().images)


def image_files(directory: Path) -> list[Path]:
    """Image files under ``directory``, recursively, sorted."""
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def debian_images(data_dir: Path = DEFAULT_DATA_DIR, folder: str = "debian") -> list[Path]:
    """Image files of the packages unpacked under ``data_dir/folder`` (``RELEASES_DIR``: the
    other releases)."""
    root = data_dir / folder
    paths = image_files(root) if root.is_dir() else []
    if pillow_jxl is None and any(p.suffix.lower() == ".jxl" for p in paths):
        raise ImportError("JPEG XL wallpapers need pillow-jxl-plugin (pip install -e '.[train]')")
    return paths


def load_rgb(path: Path, max_side: int | None = None) -> Image.Image | None:
    """Open an image as RGB, optionally downscaled; None if unusable."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max_side, max_side) if max_side else im.size)
            im = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if min(im.size) < MIN_SIDE:
        return None
    if max_side and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return im


#: The two parts of the allowed photos, in the order ``allowed_photos`` lists them.
PHOTO_SETS = ("first set", "other releases")


def allowed_photo_sets(data_dir: Path = DEFAULT_DATA_DIR,
                       max_side: int | None = 1024) -> dict[str, list[Image.Image]]:
    """The allowed real images in two parts (``PHOTO_SETS``): the first set (skimage, the
    system suite's Debian packages, sklearn: the 68 photos the models trained on before the
    other releases were added) and the images of the other Debian releases that are not
    near-duplicates of it."""
    first = usable_photos([*skimage_images(), *debian_images(data_dir)], max_side)
    for arr in sklearn_images():
        im = Image.fromarray(arr).convert("RGB")
        if max_side:
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        first.append(im)
    first = dedupe(first)
    others = dedupe(first + usable_photos(debian_images(data_dir, RELEASES_DIR), max_side))[len(first):]
    return dict(zip(PHOTO_SETS, (first, others)))


def allowed_photos(data_dir: Path = DEFAULT_DATA_DIR, max_side: int | None = 1024) -> list[Image.Image]:
    """Every allowed real image, decoded to RGB (procedural ones excluded): the first set,
    then the other releases (``allowed_photo_sets``), so a wallpaper two releases share
    keeps the first set's copy and the first set keeps its photos and their splits."""
    return [im for part in allowed_photo_sets(data_dir, max_side).values() for im in part]


def usable_photos(paths: list[Path], max_side: int | None) -> list[Image.Image]:
    """The decodable, non-flat images among ``paths`` (``load_rgb``, ``is_flat``), in order."""
    return [im for im in (load_rgb(path, max_side) for path in paths) if im is not None and not is_flat(im)]


def photo_source(directory: Path | None, limit: int | None = None) -> tuple[list[Image.Image], str]:
    """(photos, where they came from) for a training script: the allowed photos, or with
    ``directory`` the photos under it (``photos_in_directory``, at most ``limit`` files)."""
    if directory is None:
        return allowed_photos(), "allowed photos"
    return photos_in_directory(directory, limit=limit), str(Path(directory).resolve())


def photos_in_directory(directory: Path, max_side: int | None = 1024,
                        limit: int | None = None) -> list[Image.Image]:
    """Every usable image under ``directory`` (recursively), decoded like the allowed photos
    (RGB, at most ``max_side``; flat images and near-duplicates dropped): a benchmark on,
    or detectors trained on, someone's own photos. ``limit``: decode at most this many
    files, evenly spaced over the sorted list (all of them are held in memory)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"not a directory: {directory}")
    paths = image_files(directory)
    if limit and len(paths) > limit:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
    images = usable_photos(paths, max_side)
    if not images:
        raise ValueError(f"no usable images under {directory} (need RGB-decodable files, "
                         f"both sides >= {MIN_SIDE} px, not flat)")
    return dedupe(images)


#: File types read from Debian packages (pictures; vector art is skipped).
PACKAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def package_images(root: Path, min_side: int = 96, max_side: int = 768) -> list[Image.Image]:
    """The pictures of an unpacked package, transparent parts on white, at most ``max_side``."""
    out = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in PACKAGE_SUFFIXES and p.is_file()):
        try:
            with Image.open(path) as im:
                im.draft("RGB", (max_side, max_side))
                im = im.convert("RGBA")
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        if min(im.size) < min_side:
            continue
        flat = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
        flat.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out.append(flat)
    return out


def dedupe(images: list[Image.Image], max_corr: float = 0.9) -> list[Image.Image]:
    """Drop near-duplicates (the same wallpaper at several sizes, light/dark twins): an
    image is kept when its 24x24 grey signature correlates below ``max_corr`` with every
    image kept before it."""
    if not images:
        return []
    sigs = np.stack([np.asarray(im.convert("L").resize((24, 24), Image.Resampling.BILINEAR), np.float32).ravel()
                     for im in images])
    sigs = (sigs - sigs.mean(1, keepdims=True)) / (sigs.std(1, keepdims=True) + 1e-6)
    corr = sigs @ sigs.T / sigs.shape[1]
    kept: list[int] = []
    for i in range(len(images)):
        if not kept or corr[i, kept].max() < max_corr:
            kept.append(i)
    return [images[i] for i in kept]


def is_flat(im: Image.Image, min_std: float = 20.0) -> bool:
    """Near-uniform images (logos on flat colour, blank sky) carry no identity."""
    small = np.asarray(im.convert("L").resize((64, 64)), dtype=np.float32)
    # Local detail matters, not a global gradient: compare with a blurred copy too.
    detail = np.abs(np.diff(small, axis=0)).mean() + np.abs(np.diff(small, axis=1)).mean()
    return float(small.std()) < min_std or detail < 2.0


def procedural_image(seed: int, size: int = 384) -> Image.Image:
    """A deterministic synthetic scene: gradient sky, textured ground, shapes."""
    rng = np.random.default_rng(seed)
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    base = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    # Band-limited noise texture: a few random sinusoids.
    tex = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(2, 6))):
        fx, fy = rng.uniform(1, 24, 2)
        tex += np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    base += tex[..., None] * rng.uniform(4, 20)
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 12))):
        x0, y0 = rng.integers(-size // 4, size, 2)
        sx, sy = rng.integers(size // 16, size // 2, 2)
        box = [int(x0), int(y0), int(x0 + sx), int(y0 + sy)]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        elif kind == 2:
            pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(int(rng.integers(3, 7)))]
            draw.polygon(pts, fill=colour)
        else:
            draw.line([tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(3)],
                      fill=colour, width=int(rng.integers(2, 12)))
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    return im


def _octave_noise(rng: np.random.Generator, size: int, scales: list[int], beta: float) -> np.ndarray:
    """Zero-mean noise with structure at each of ``scales`` px (amplitude ~ scale ** beta), unit std."""
    out = np.zeros((size, size), np.float32)
    for s in scales:
        cells = max(2, size // s)
        layer = rng.normal(0, 1, (cells, cells)).astype(np.float32)
        out += np.asarray(Image.fromarray(layer).resize((size, size), Image.Resampling.BICUBIC)) * s ** beta
    return (out - out.mean()) / (out.std() + 1e-6)


def grainy_image(seed: int, size: int = 384) -> Image.Image:
    """A deterministic grain-heavy field: fractal relief, cells and craters, fine grain.

    Photos of grainy content (micrographs, the moon, grass) are rare among the
    allowed photos, and a detector fine-tuned on more latent-fill samples of them
    learned "a soft region among grain is painted". These fields put that look
    among the negatives (and, with a fill, among the positives) without borrowing
    any evaluation image: relief at several scales, sometimes lit from one side
    (craters, terrain), rings, discs or soft blobs, then per-pixel grain from
    faint to heavy that a JPEG at 75-95 keeps, in grey or one tint."""
    rng = np.random.default_rng(seed)
    relief = _octave_noise(rng, size, [4, 8, 16, 32, 64, 128], float(rng.uniform(0.3, 1.3)))
    if rng.random() < 0.4:  # lit relief: brightness from the slope toward a light
        gy, gx = np.gradient(relief * rng.uniform(2, 6))
        angle = rng.uniform(0, 2 * np.pi)
        relief = 0.5 * relief + np.cos(angle) * gx + np.sin(angle) * gy
    field = relief * rng.uniform(4, 45)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(0, 30))):  # cells / craters / pebbles
        cx, cy = rng.uniform(0, size, 2)
        radius = rng.uniform(4, size / 8)
        r = np.hypot(xx - cx, yy - cy) / radius
        shape = rng.random()
        if shape < 0.3:  # a ring (a cell's membrane, a crater's rim)
            profile = np.exp(-(r - 1) ** 2 * 8)
        elif shape < 0.6:  # a disc with a defined edge and a faint halo of the other sign
            edge = np.minimum((r - 1) * rng.uniform(6, 20), 50)  # capped: no overflow far outside
            profile = 1 / (1 + np.exp(edge)) - 0.3 * np.exp(-(r - 1.3) ** 2 * 10)
        else:  # a soft blob
            profile = np.exp(-r ** 2 * 2)
        field += profile * rng.uniform(-40, 40)
    grain = rng.normal(0, 1, (size, size)).astype(np.float32)
    sharpness = rng.uniform(0.0, 1.2)
    if sharpness > 0.3:  # grain a pixel or two across, as sensors and film have
        offsets = np.arange(-3, 4)
        weights = np.exp(-offsets ** 2 / (2 * sharpness ** 2))
        for axis in (0, 1):  # a separable Gaussian blur, wrapping around (the grain has no edges)
            grain = sum(w * np.roll(grain, int(k), axis) for k, w in zip(offsets, weights / weights.sum()))
        grain /= grain.std() + 1e-6
    field += grain * rng.uniform(1, 16)  # from barely there to heavy
    level = rng.uniform(60, 190)
    if rng.random() < 0.5:
        tint = np.ones(3, np.float32)
    else:
        tint = rng.uniform(0.5, 1.3, 3).astype(np.float32)
    rgb = (level + field)[..., None] * tint[None, None] + rng.normal(0, 3, (size, size, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def random_crop(im: Image.Image, rng: np.random.Generator, out: int,
                min_frac: float = 0.25, max_frac: float = 1.0) -> Image.Image:
    """A random square-ish crop covering min_frac..max_frac of the short side, resized to out."""
    w, h = im.size
    side = int(min(w, h) * rng.uniform(min_frac, max_frac))
    side = max(side, min(32, w, h))
    aspect = rng.uniform(0.8, 1.25)
    cw = min(w, int(side * aspect))
    ch = min(h, side)
    x = int(rng.integers(0, w - cw + 1))
    y = int(rng.integers(0, h - ch + 1))
    return im.crop((x, y, x + cw, y + ch)).resize((out, out), Image.Resampling.BICUBIC)


def photo_tiles(photo: Image.Image, size: int = 320, min_tile: int = 160) -> list[Image.Image]:
    """Up to 4x4 non-overlapping tiles of a photo (at least ``min_tile`` px each), resized to
    ``size``; flat tiles (clear sky, blank wallpaper) are dropped, they are indistinguishable."""
    grid = max(1, min(4, min(photo.size) // min_tile))
    return [t.resize((size, size), Image.Resampling.BICUBIC) for t in iter_tiles(photo, grid) if not is_flat(t)]


def iter_tiles(im: Image.Image, grid: int) -> Iterator[Image.Image]:
    """Non-overlapping grid x grid tiles of an image (hard negatives of each other)."""
    w, h = im.size
    for gy in range(grid):
        for gx in range(grid):
            yield im.crop((gx * w // grid, gy * h // grid, (gx + 1) * w // grid, (gy + 1) * h // grid))


SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}


#: Chosen once so that the 68 bundled photos split 48 / 9 / 11 rather than by luck of the hash.
SPLIT_SALT = "e"


def _thumb(im: Image.Image) -> bytes:
    """The 16 x 16 grey thumbnail a photo's split (and a photo set's digest) is computed from."""
    return np.asarray(im.convert("L").resize((16, 16), Image.Resampling.BILINEAR), np.uint8).tobytes()


def photo_set_digest(images: list[Image.Image]) -> str:
    """A short stable name for a set of photos (order matters), for cache file names."""
    digest = hashlib.sha256()
    for im in images:
        digest.update(_thumb(im))
    return digest.hexdigest()[:8]


def split_of(im: Image.Image, salt: str = SPLIT_SALT) -> str:
    """A stable train / val / test assignment of a photo, from a hash of its content.

    Models train on "train", calibrate on "val" and benchmarks report on
    "test", so no benchmark image is a crop of a photo a model saw."""
    digest = hashlib.sha256(salt.encode() + _thumb(im)).digest()
    u = int.from_bytes(digest[:8], "big") / 2 ** 64
    edge = 0.0
    for name, fraction in SPLITS.items():
        edge += fraction
        if u < edge:
            return name
    return "test"


def photos_in_split(split: str, images: list[Image.Image] | None = None) -> list[Image.Image]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {list(SPLITS)}")
    return [im for im in (images if images is not None else allowed_photos()) if split_of(im) == split]
