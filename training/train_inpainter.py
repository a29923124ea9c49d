"""Train the CNN inpainter behind the training-only ``cnn`` fill (``training.cnn_inpainter``).

    python -m training.train_inpainter            # about 13 minutes on 2 CPU cores

Random crops of the *train* photos (``training.data.photos_in_split``; val and
test photos never reach it, so the detector's validation and the benchmark see
no fill that learned their content), holes drawn with the seen mask types
(``training.inpainting.make_mask``; the held-out ``polygon`` stays out) covering
3-30% of the crop, a random mirror. Loss: L1 over the hole, weighted 6 to 1
against L1 over the known pixels (which the network must pass through; the fill
pastes only the hole). One-cycle AdamW. Writes the weights to ``--out`` (promoted to
``training.cnn_inpainter.DEFAULT_WEIGHTS`` by ``make promote-inpainter``), the loss
curve and a sheet of fills (original | masked | filled) to ``training/results``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from origin_id.models.weights import count_parameters, save_model
from training.cnn_inpainter import FORMAT, CnnInpainter, CnnInpainterConfig
from training.data import photo_source, photos_in_split, random_crop
from training.inpainting import SEEN_MASKS, make_mask
from training.plots import plot_curve

#: Hole area range, as a fraction of the crop (the detector's samples span about the same).
HOLE_AREA = (0.03, 0.3)
#: Weight of the hole's L1 against the known pixels'.
HOLE_WEIGHT = 6.0


def crops_of(photos: list[Image.Image], n: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random crops (uint8, n x side x side x 3), at least 15% of a photo's short side each."""
    return np.stack([np.asarray(random_crop(photos[int(rng.integers(len(photos)))], rng, side, min_frac=0.15)
                                .convert("RGB"))
                     for _ in tqdm(range(n), desc="crops", unit="crop", dynamic_ncols=True)])


def batch(crops: np.ndarray, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [-1, 1], holes) of ``size`` random crops, each mirrored half the time."""
    idx = rng.integers(0, len(crops), size)
    side = crops.shape[1]
    x = torch.from_numpy(crops[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
    m = torch.from_numpy(np.stack([make_mask(str(rng.choice(SEEN_MASKS)), side, side, rng, area=HOLE_AREA)
                                   for _ in idx])).float()[:, None]
    if rng.random() < 0.5:
        x, m = x.flip(-1), m.flip(-1)
    return x, m


def inpainting_loss(pred: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    error = (pred - target).abs()
    hole_l1 = (error * hole).sum() / (3 * hole.sum()).clamp(min=1)
    return HOLE_WEIGHT * hole_l1 + (error * (1 - hole)).mean()


def fill_sheet(model: CnnInpainter, crops: np.ndarray, rng: np.random.Generator, path: Path, rows: int = 6) -> None:
    """Original | masked | filled, one crop per row (the fill pasted as ``CnnInpainter.fill`` does)."""
    lines = []
    for i in np.linspace(0, len(crops) - 1, rows).astype(int):
        image = crops[i]
        hole = make_mask("ellipse", image.shape[1], image.shape[0], rng, area=(0.1, 0.2))
        masked = image.copy()
        masked[hole] = 0
        lines.append(np.concatenate([image, masked, model.fill(image, hole)], 1))
    Image.fromarray(np.concatenate(lines, 0)).save(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(".data/runs/cnn_inpainter.safetensors"))
    p.add_argument("--results", type=Path, default=Path("training/results"))
    p.add_argument("--photos", type=Path, default=None,
                   help="train on this directory's train split instead of the allowed photos")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--crops", type=int, default=6000, help="random crops drawn once, then sampled per batch")
    p.add_argument("--crop", type=int, default=128, help="crop side in pixels (a multiple of 4)")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.crop % 4 or args.crop < 16:
        p.error(f"--crop must be a multiple of 4 of at least 16, got {args.crop}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.results.mkdir(parents=True, exist_ok=True)

    photos, source = photo_source(args.photos)
    train_photos = photos_in_split("train", photos)
    if not train_photos:
        raise SystemExit(f"no train-split photos among {len(photos)}")
    crops = crops_of(train_photos, args.crops, args.crop, rng)

    model = CnnInpainter(CnnInpainterConfig())
    print(f"CnnInpainter: {count_parameters(model):,} parameters, {len(train_photos)} train photos")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    history: list[tuple[int, float]] = []
    started = time.time()
    bar = tqdm(range(args.steps), desc="inpainter", unit="step", dynamic_ncols=True)
    for step in bar:
        x, hole = batch(crops, args.batch, rng)
        loss = inpainting_loss(model(x, hole), x, hole)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append((step, float(loss.detach())))
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean([v for _, v in history[-25:]]):.3f}")
    model.eval()
    model.config.training = {
        "steps": args.steps, "batch": args.batch, "lr": args.lr, "crops": args.crops, "crop": args.crop,
        "seed": args.seed, "photos": source,
        "train_photos": len(train_photos), "masks": SEEN_MASKS, "hole_area": list(HOLE_AREA),
        "hole_weight": HOLE_WEIGHT, "final_loss": round(float(np.mean([v for _, v in history[-50:]])), 4),
        "minutes": round((time.time() - started) / 60, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, args.out, FORMAT)
    plot_curve(history, args.results / "inpainter_loss.png", "L1 (hole x6 + known)", smooth=True)
    fill_sheet(model, crops, rng, args.results / "inpainter_fills.jpg")
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) in {model.config.training['minutes']} min")


if __name__ == "__main__":
    main()
