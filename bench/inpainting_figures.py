"""The inpainting benchmark's pictures: masks over queries, the numbered test photos, ROC
curves (``bench/inpainting.py``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from origin_id.detectors.analyzer import InpaintingResult
from training.inpainting import Sample
from training.metrics import roc_auc


def mask_sheet(samples: list[Sample], results: list[InpaintingResult], path: Path, n: int = 8) -> None:
    """Rows of (query, ground truth over query, predicted mask over query)."""
    tiles = []
    size = 192
    for s, r in list(zip(samples, results))[:n]:
        im = Image.open(io.BytesIO(s.jpeg)).convert("RGB").resize((size, size))

        def overlay(mask: np.ndarray | None, colour: tuple[int, int, int], base: Image.Image = im) -> Image.Image:
            arr = np.asarray(base, np.float32).copy()
            if mask is not None:
                m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size))) > 127
                arr[m] = 0.45 * arr[m] + 0.55 * np.array(colour, np.float32)
            return Image.fromarray(arr.astype(np.uint8))

        tiles.append([im, overlay(s.mask, (0, 200, 0)), overlay(r.mask, (230, 30, 30))])
    sheet = Image.new("RGB", (3 * size + 8, len(tiles) * (size + 4)), "white")
    for row, trio in enumerate(tiles):
        for col, tile in enumerate(trio):
            sheet.paste(tile, (col * (size + 4), row * (size + 4)))
    sheet.save(path)


def photo_sheet(photos: list[Image.Image], rows: list[dict], path: Path, height: int = 120,
                width: int = 960) -> None:
    """The test photos in rows of at most ``width`` px, each captioned with its number and AUC."""
    from PIL import ImageDraw

    thumbs = [p.resize((max(1, round(p.width * height / p.height)), height)) for p in photos]
    cells = [max(t.width, 100) + 6 for t in thumbs]  # room for the caption under a narrow photo
    places, x, y = [], 0, 0
    for cell in cells:
        if x and x + cell > width:
            x, y = 0, y + height + 20
        places.append((x, y))
        x += cell
    sheet = Image.new("RGB", (max(px + c for (px, _), c in zip(places, cells)), y + height + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for thumb, row, (px, py) in zip(thumbs, rows, places):
        sheet.paste(thumb, (px, py))
        draw.text((px + 2, py + height + 4), f"#{row['photo']} AUC {row['auc']:.2f}", fill="black")
    sheet.save(path)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, (pos, neg) in curves.items():
        cuts = np.unique(np.concatenate([pos, neg, [np.inf]]))[::-1]
        tpr = [(pos >= c).mean() for c in cuts]
        fpr = [(neg >= c).mean() for c in cuts]
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(pos, neg):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.axvline(0.05, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
