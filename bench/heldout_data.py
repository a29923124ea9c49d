"""The held-out image sources: whole Debian packages that no model of this project trains,
calibrates or is tuned on, fetched and cut into a gallery and a pool of outside images.

    python -m bench.heldout_data [--out .data/heldout]

Sources (licences as their Debian copyright files state):

* ``plasma-workspace-wallpapers`` - KDE Plasma wallpapers, photographs and artwork
  (LGPL-3 / CC-BY-SA-4.0 per wallpaper). Each wallpaper is cut into overlapping crops:
  crops of one picture are the *near-duplicate hard negatives* of each other.
* ``ufoai-textures`` - UFO: Alien Invasion textures (GPL-2+, CC-BY-SA), many of them
  variants of one material: further hard negatives.
* ``torcs-data`` - TORCS tracks, cars and backgrounds (GPL-2+, Free Art).
* ``openclipart-png`` - Open Clip Art Library drawings (public domain).
* ``supertux-data`` - SuperTux sprites, tiles and backgrounds (GPL-2+, GPL-3+, CC-BY-SA).

Every image is decoded once, flattened onto white where transparent, fitted within
``MAX_SIDE`` and written as a quality-95 JPEG named ``<source>/<id>.jpg``. A stable hash
of each source item decides its side: about one in ten go to the *outside* pool (the
no-origin queries' material), the rest to the gallery; the crops of one wallpaper stay on
one side. ``manifest.json`` lists both with their sources. Nothing of this is committed:
the script rebuilds it from the packages.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from training.fetch_data import unpack_package

PACKAGES = {
    "plasma-workspace-wallpapers": "LGPL-3 / CC-BY-SA-4.0",
    "ufoai-textures": "GPL-2+ / CC-BY-SA",
    "torcs-data": "GPL-2+ / Free Art License",
    "openclipart-png": "public domain",
    "supertux-data": "GPL-2+ / GPL-3+ / CC-BY-SA",
}
MAX_SIDE = 768
MIN_SIDE = 96
OUTSIDE_SHARE = 10  # one in ten items is kept out of the gallery
WALLPAPER_CROPS = 16
SUFFIXES = (".png", ".jpg", ".jpeg", ".rgb", ".tga", ".bmp")


def outside(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % OUTSIDE_SHARE == 0


def flatten(im: Image.Image) -> Image.Image | None:
    if min(im.size) < MIN_SIDE:
        return None
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(canvas, im)
    im = im.convert("RGB")
    im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return im


def wallpaper_items(root: Path) -> Iterator[tuple[str, str, Image.Image]]:
    """(item key, name, image): overlapping crops of the largest file of each wallpaper
    (and of its dark variant, a near-duplicate of the light one)."""
    for folder in sorted(root.glob("usr/share/wallpapers/*/contents")):
        for variant in ("images", "images_dark"):
            files = sorted((folder / variant).glob("*.*"))
            if not files:
                continue
            largest = max(files, key=lambda p: p.stat().st_size)
            with Image.open(largest) as im:
                full = im.convert("RGB")
            w, h = full.size
            # A 4 x 3 grid of crops of 45% of each side, then 2 x 2 of 30%: neighbours overlap.
            grid = [(0.45, i % 4 / 3, i // 4 / 2) for i in range(12)] + \
                   [(0.3, 0.2 + 0.6 * (i % 2), 0.2 + 0.6 * (i // 2)) for i in range(4)]
            for i, (share, fx, fy) in enumerate(grid[:WALLPAPER_CROPS]):
                cw, ch = int(w * share), int(h * share)
                x, y = int((w - cw) * fx), int((h - ch) * fy)
                yield folder.parent.name, f"{folder.parent.name}-{variant}-{i:02d}", full.crop((x, y, x + cw, y + ch))


def file_items(root: Path) -> Iterator[tuple[str, str, Image.Image]]:
    """(item key, name, image) for every image file, inside zip archives (pk3) too."""
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in SUFFIXES and path.is_file():
            try:
                with Image.open(path) as im:
                    im.load()
                    yield str(path.relative_to(root)), str(path.relative_to(root)), im.copy()
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
        elif path.suffix.lower() == ".pk3":
            with zipfile.ZipFile(path) as archive:
                for name in sorted(archive.namelist()):
                    if not name.lower().endswith(SUFFIXES):
                        continue
                    try:
                        with Image.open(io.BytesIO(archive.read(name))) as im:
                            im.load()
                            yield name, name, im.copy()
                    except (OSError, ValueError, Image.DecompressionBombError):
                        continue


def build(out: Path, debs: Path) -> dict:
    manifest: dict = {"sources": PACKAGES, "gallery": [], "outside": []}
    for package in PACKAGES:
        root = unpack_package(package, debs)
        items = wallpaper_items(root) if package == "plasma-workspace-wallpapers" else file_items(root)
        target = out / package
        target.mkdir(parents=True, exist_ok=True)
        for n, (key, name, im) in enumerate(tqdm(items, desc=package, unit="img")):
            im = flatten(im)
            if im is None:
                continue
            side = "outside" if outside(f"{package}/{key}") else "gallery"
            path = target / f"{n:05d}.jpg"
            if not path.exists():
                im.save(path, quality=95)
            manifest[side].append({"path": str(path.relative_to(out)), "source": package, "name": name,
                                   "group": f"{package}/{key}"})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def load(out: Path) -> dict:
    path = out / "manifest.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python -m bench.heldout_data --out {out}` first")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(".data/heldout"))
    p.add_argument("--debs", type=Path, default=None, help="where packages are unpacked (default OUT/debs)")
    args = p.parse_args(argv)
    manifest = build(args.out, args.debs or args.out / "debs")
    print(f"gallery {len(manifest['gallery'])} images, outside pool {len(manifest['outside'])}")


if __name__ == "__main__":
    main()
