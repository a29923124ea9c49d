"""Learn the ID2 linear transform W on precomputed VAE latents.

    python -m training.train_transform --out .data/runs/transform.safetensors   # then: make promote-transform

The recipe of ID2 (arXiv 2501.02376): each origin is one class; a batch holds
P origins x K instances (the origin and its edited versions); the loss is
CosFace (s=64, m=0.35) on the L2-normalised W-projected latents; Adam
(lr 3.5e-4) with linear warm-up then cosine decay; the exported W is an
exponential moving average (0.9999, with the usual warm-up of the decay).

Origins are tiles of the *train-split* photos, pictures of allowed game-texture
and artwork packages no other model or calibration uses (``TRAIN_PACKAGES``, with
their 2x2 tiles) and procedural scenes; edits come from the *seen* families of
``training.edits`` only (copy, re-render, and the layout- and colour-breaking
ones: deep crops, tilts, grey levels, hue turns, line drawings). The match threshold
is then calibrated by ``training.calibrate_transform`` on val-split photos,
with the query views the service uses (run as the last step here).

Latents are cached in ``--run-dir`` and training resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from origin_id.indexer.transform import LinearTransform, TransformConfig
from origin_id.models.vae import load_vae, preprocess, vae_fingerprint
from training.data import (
    allowed_photos,
    dedupe,
    grainy_image,
    is_flat,
    iter_tiles,
    package_images,
    photo_tiles,
    photos_in_split,
    procedural_image,
)
from training.edits import random_seen_edit
from training.fetch_data import unpack_package
from training.plots import plot_curve

#: Where the extra packages are unpacked (``training.fetch_data.unpack_package``).
TRAIN_DEBS = Path(".data/train-extra")
#: Allowed packages no other model or calibration uses: game textures and artwork.
TRAIN_PACKAGES = ["supertuxkart-data", "debian-edu-artwork-buster", "debian-edu-artwork-emerald",
                  "debian-edu-artwork-homeworld", "debian-edu-artwork-softwaves", "debian-edu-artwork-spacefun"]


def package_origins(packages: list[str], debs: Path, size: int) -> list[list]:
    """Pictures of ``packages``, near-duplicates dropped; each picture with 2x2 tiles of
    it when it is large enough (hard negatives of each other), as one group."""
    pictures = [im for pkg in packages for im in package_images(unpack_package(pkg, debs))]
    pictures = dedupe([im for im in pictures if not is_flat(im, min_std=8.0)])
    groups = []
    for im in pictures:
        group = [im.resize((size, size), Image.Resampling.BICUBIC)]
        if min(im.size) >= 2 * 192:
            group += [t.resize((size, size), Image.Resampling.BICUBIC) for t in iter_tiles(im, 2)
                      if not is_flat(t, min_std=8.0)]
        groups.append(group)
    return groups


def build_origins(n: int, seed: int, size: int = 320, min_tile: int = 160,
                  packages: list[str] = (), debs: Path = TRAIN_DEBS):
    """Distinct origins: non-overlapping tiles of each *train-split* photo, pictures of
    ``packages`` with their tiles (hard negatives of each other), then procedural scenes
    and grain fields up to ``n``. Val photos are kept for calibration and test photos
    for the benchmarks."""
    rng = np.random.default_rng(seed)
    groups: list[list] = []
    for photo in photos_in_split("train", allowed_photos()):
        groups.append(photo_tiles(photo, size, min_tile))
    if packages:
        groups += package_origins(list(packages), debs, size)
    rng.shuffle(groups)
    origins = [tile for group in groups for tile in group][:n]
    extra = n - len(origins)
    origins += [procedural_image(seed * 100_003 + i, size=size) if i % 4 else grainy_image(seed * 100_003 + i, size)
                for i in range(extra)]
    return origins


@torch.inference_mode()
def encode_latents(vae, images, batch: int = 16, desc: str = "latents", progress: bool = True) -> np.ndarray:
    out = []
    for start in tqdm(range(0, len(images), batch), desc=desc, unit="batch", dynamic_ncols=True,
                      disable=not progress):
        x = preprocess(images[start:start + batch])
        out.append(vae.encode(x).latent_dist.mean.flatten(1).float().numpy())
    return np.concatenate(out)


def make_latent_set(vae, n_origins: int, per_origin: int, seed: int, cache: Path,
                    packages: list[str] = (), debs: Path = TRAIN_DEBS) -> np.ndarray:
    """(n_origins, per_origin, latent_dim): instance 0 is the origin, the rest are edits."""
    if cache.exists():
        data = np.load(cache)
        if data.shape[:2] == (n_origins, per_origin):
            return data
    rng = np.random.default_rng(seed + 1)
    origins = build_origins(n_origins, seed, packages=packages, debs=debs)
    chunks = []  # edited and encoded a chunk at a time: all the edited images would not fit in memory
    for start in tqdm(range(0, n_origins, 128), desc="edits + latents", unit="chunk", dynamic_ncols=True):
        images = []
        for origin in origins[start:start + 128]:
            images.append(origin)
            images.extend(random_seen_edit(origin, rng) for _ in range(per_origin - 1))
        chunks.append(encode_latents(vae, images, progress=False))
    latents = np.concatenate(chunks).reshape(n_origins, per_origin, -1)
    np.save(cache, latents)
    return latents


class CosFace(torch.nn.Module):
    def __init__(self, dim: int, classes: int, s: float = 64.0, m: float = 0.35):
        super().__init__()
        self.s, self.m = s, m
        self.weight = torch.nn.Parameter(torch.randn(classes, dim) * 0.01)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(self.weight, dim=-1).T
        margin = F.one_hot(labels, cos.shape[1]).to(cos.dtype) * self.m
        return F.cross_entropy(self.s * (cos - margin), labels)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.train_transform", description=__doc__.splitlines()[0])
    p.add_argument("--vae", default="indexer/default_model/vae", help="HF id or directory")
    p.add_argument("--out", type=Path, default=Path(".data/runs/transform.safetensors"))
    p.add_argument("--run-dir", type=Path, default=Path(".data/runs/transform-checkpoints"))
    p.add_argument("--origins", type=int, default=6000)
    p.add_argument("--packages", default=",".join(TRAIN_PACKAGES),
                   help="comma-separated Debian packages of extra origins ('' for photos and scenes only)")
    p.add_argument("--debs", type=Path, default=TRAIN_DEBS, help="where packages are unpacked")
    p.add_argument("--instances", type=int, default=4, help="K: origin + K-1 edits per class")
    p.add_argument("--per-batch", type=int, default=32, help="P: origins per batch")
    p.add_argument("--rank", type=int, default=512)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--ema", type=float, default=0.9999)
    p.add_argument("--scale", type=float, default=64.0)
    p.add_argument("--margin", type=float, default=0.35)
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    args.run_dir.mkdir(parents=True, exist_ok=True)

    vae = load_vae(args.vae).eval()
    fingerprint = vae_fingerprint(vae)
    packages = [p for p in args.packages.split(",") if p]
    tag = hashlib.sha256(",".join(packages).encode()).hexdigest()[:8]
    latents = make_latent_set(vae, args.origins, args.instances, args.seed,
                              args.run_dir / f"latents-{fingerprint}-{tag}-{args.origins}x{args.instances}.npy",
                              packages, args.debs)
    train = torch.from_numpy(latents)
    n_classes, k, dim = train.shape
    print(f"{n_classes} training origins x {k} instances; latent dim {dim}")

    config = TransformConfig(latent_dim=dim, rank=args.rank, vae_source=str(args.vae),
                             vae_fingerprint=fingerprint)
    model = LinearTransform(config)
    ema = LinearTransform(config)
    ema.load_state_dict(model.state_dict())
    loss_fn = CosFace(args.rank, n_classes, args.scale, args.margin)
    opt = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=args.lr)
    step, history = 0, []
    ckpt = args.run_dir / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state.get("fingerprint") == fingerprint and state["classes"] == n_classes:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            loss_fn.load_state_dict(state["loss"])
            opt.load_state_dict(state["opt"])
            step, history = state["step"], state["history"]
            print(f"resumed at step {step}")

    # Latent scale differs between VAEs; a fixed input scale keeps the recipe's lr meaningful.
    scale = float(train[:, 0].std())
    rng = np.random.default_rng(args.seed + step)
    bar = tqdm(total=args.steps, initial=step, desc="transform", unit="step", dynamic_ncols=True)
    last_save = time.monotonic()
    while step < args.steps:
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        classes = torch.from_numpy(rng.choice(n_classes, args.per_batch, replace=False))
        x = train[classes].reshape(-1, dim) / scale
        labels = classes.repeat_interleave(k)
        loss = loss_fn(model.linear(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        history.append((step, loss.item()))
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.1e}")
        if time.monotonic() - last_save > 120 or step == args.steps:
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "loss": loss_fn.state_dict(),
                        "opt": opt.state_dict(), "step": step, "history": history,
                        "fingerprint": fingerprint, "classes": n_classes}, ckpt)
            last_save = time.monotonic()
    bar.close()

    # Fold the input scale into W so the exported transform applies to raw latents.
    with torch.no_grad():
        ema.linear.weight.div_(scale)

    ema.config.training = {"script": "training/train_transform.py", "loss": "CosFace",
                           "s": args.scale, "m": args.margin, "steps": step, "lr": args.lr,
                           "P": args.per_batch, "K": k, "ema": args.ema, "origins": n_classes,
                           "final_loss": round(float(np.mean([h[1] for h in history[-50:]])), 4)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ema.save(args.out)
    plot_curve(history, args.run_dir / "loss.png", "CosFace loss", smooth=True)
    print(f"wrote {args.out}; calibrating")
    from training.calibrate_transform import main as calibrate

    calibrate(["--transform", str(args.out), "--vae", str(args.vae),
               "--target-precision", str(args.target_precision)])



if __name__ == "__main__":
    main()
