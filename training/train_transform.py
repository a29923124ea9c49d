"""Learn the ID2 linear transform W on precomputed VAE latents.

    python -m training.train_transform --out .data/runs/transform.safetensors   # then: make promote-transform

The recipe of ID2 (arXiv 2501.02376): each origin is one class; a batch holds
P origins x K instances (the origin and its edited versions); the loss is
CosFace (s=64, m=0.35) on the L2-normalised W-projected latents; Adam
(lr 3.5e-4) with linear warm-up then cosine decay; the exported W is an
exponential moving average (0.9999, with the usual warm-up of the decay).

Origins are tiles of the *train-split* photos and procedural scenes; edits
come from the *seen* families of ``training.edits`` only. The match threshold
is then calibrated by ``training.calibrate_transform`` on val-split photos,
with the query views the service uses (run as the last step here).

Latents are cached in ``--run-dir`` and training resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from origin_id.indexer.transform import LinearTransform, TransformConfig
from origin_id.models.vae import load_vae, preprocess, vae_fingerprint
from training.data import allowed_photos, photo_tiles, photos_in_split, procedural_image
from training.edits import random_seen_edit
from training.plots import plot_curve


def build_origins(n: int, seed: int, size: int = 320, min_tile: int = 160):
    """Distinct origins: non-overlapping tiles of each *train-split* photo (hard
    negatives of each other), then procedural scenes up to ``n``. Val photos are
    kept for calibration and test photos for the benchmarks."""
    rng = np.random.default_rng(seed)
    groups: list[list] = []
    for photo in photos_in_split("train", allowed_photos()):
        groups.append(photo_tiles(photo, size, min_tile))
    rng.shuffle(groups)
    origins = [tile for group in groups for tile in group][:n]
    origins += [procedural_image(seed * 100_003 + i, size=size) for i in range(n - len(origins))]
    return origins


@torch.inference_mode()
def encode_latents(vae, images, batch: int = 16, desc: str = "latents") -> np.ndarray:
    out = []
    for start in tqdm(range(0, len(images), batch), desc=desc, unit="batch", dynamic_ncols=True):
        x = preprocess(images[start:start + batch])
        out.append(vae.encode(x).latent_dist.mean.flatten(1).float().numpy())
    return np.concatenate(out)


def make_latent_set(vae, n_origins: int, per_origin: int, seed: int, cache: Path) -> np.ndarray:
    """(n_origins, per_origin, latent_dim): instance 0 is the origin, the rest are edits."""
    if cache.exists():
        data = np.load(cache)
        if data.shape[:2] == (n_origins, per_origin):
            return data
    rng = np.random.default_rng(seed + 1)
    origins = build_origins(n_origins, seed)
    images = []
    for origin in tqdm(origins, desc="edits", unit="origin", dynamic_ncols=True):
        images.append(origin)
        images.extend(random_seen_edit(origin, rng) for _ in range(per_origin - 1))
    latents = encode_latents(vae, images).reshape(n_origins, per_origin, -1)
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
    p.add_argument("--origins", type=int, default=1500)
    p.add_argument("--instances", type=int, default=4, help="K: origin + K-1 edits per class")
    p.add_argument("--per-batch", type=int, default=32, help="P: origins per batch")
    p.add_argument("--rank", type=int, default=512)
    p.add_argument("--steps", type=int, default=3000)
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
    latents = make_latent_set(vae, args.origins, args.instances, args.seed,
                              args.run_dir / f"latents-{fingerprint}-{args.origins}x{args.instances}.npy")
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
