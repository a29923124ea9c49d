"""Train the bundled compact VAE (``origin_id.models.vae.small_vae_config``).

    python -m training.train_vae --minutes 90 --out .data/runs/vae   # then: make promote-vae

Reconstruction (L1 + L1 on image gradients, which keeps edges sharp without a
perceptual network we could not download) plus a small KL term, on random
crops of the allowed photos (``training.data``) mixed with procedural scenes.
The model is fully convolutional, so it trains on 128 px crops (4x cheaper)
and is used at 256 px. Resumable: a checkpoint is written to ``--run-dir``
every few minutes and picked up by the next run; ``--minutes`` bounds the
wall-clock time of one run; ``--init-from`` continues from saved weights
(the committed model) when no checkpoint exists. Writes a loss curve and a
reconstruction sheet.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from origin_id.models.vae import build_small_vae
from training.data import allowed_photos, procedural_image, random_crop
from training.plots import plot_curve


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def to_images(x: torch.Tensor) -> list[Image.Image]:
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


class CropSampler:
    """Random crops of real photos (with flips) mixed with procedural scenes."""

    def __init__(self, photos: list[Image.Image], size: int, seed: int, procedural_frac: float = 0.2):
        self.photos, self.size, self.procedural_frac = photos, size, procedural_frac
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        out = []
        for _ in range(n):
            if self.rng.random() < self.procedural_frac:
                im = procedural_image(int(self.rng.integers(1 << 30)), size=self.size * 2)
            else:
                im = self.photos[int(self.rng.integers(len(self.photos)))]
            crop = random_crop(im, self.rng, self.size, min_frac=0.15, max_frac=1.0)
            if self.rng.random() < 0.5:
                crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out.append(crop)
        return to_tensor(out)


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 plus half the L1 of image gradients (sharp edges without a perceptual network)."""
    return (recon - x).abs().mean() + 0.5 * gradient_l1(recon, x)


def lr_at(step: int, total: int, base: float, warmup: int = 500) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_sheet(vae, photos: list[Image.Image], path: Path, size: int = 256) -> float:
    """Originals (top) over reconstructions (bottom) at the serving size; returns PSNR."""
    rng = np.random.default_rng(0)
    x = to_tensor([random_crop(photos[i % len(photos)], rng, size, 0.6, 1.0) for i in range(0, 48, 6)])
    vae.eval()
    with torch.inference_mode():
        y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    vae.train()
    mse = F.mse_loss((y + 1) / 2, (x + 1) / 2).item()
    top, bottom = to_images(x), to_images(y)
    sheet = Image.new("RGB", (size * len(top), size * 2))
    for i, (a, b) in enumerate(zip(top, bottom)):
        sheet.paste(a, (i * size, 0))
        sheet.paste(b, (i * size, size))
    sheet.save(path)
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=Path(".data/runs/vae-checkpoints"))
    p.add_argument("--out", type=Path, default=Path(".data/runs/vae"))
    p.add_argument("--steps", type=int, default=30000, help="schedule length (cosine decay)")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run")
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from these saved VAE weights when there is no checkpoint (continue training "
                        "the committed model in a fresh checkout: --init-from indexer/default_model/vae)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.run_dir / "checkpoint.pt"

    photos = allowed_photos()
    print(f"{len(photos)} allowed photos")
    vae = build_small_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=1e-4)
    step, history = 0, []
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        print(f"resumed at step {step}")
    elif args.init_from is not None:
        from diffusers import AutoencoderKL

        vae.load_state_dict(AutoencoderKL.from_pretrained(args.init_from, low_cpu_mem_usage=False).state_dict())
        print(f"initialised from {args.init_from}")
    sampler = CropSampler(photos, args.crop, seed=args.seed + step)

    def checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": vae.state_dict(), "optimizer": opt.state_dict(),
                    "step": step, "history": history}, tmp)
        tmp.replace(ckpt_path)

    vae.train()
    deadline = time.monotonic() + args.minutes * 60
    last_ckpt = time.monotonic()
    bar = tqdm(total=args.steps, initial=step, desc="vae", unit="step", dynamic_ncols=True)
    running = None
    while step < args.steps and time.monotonic() < deadline:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        x = sampler.batch(args.batch_size)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        rec = reconstruction_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec + args.kl_weight * kl * x[0].numel() / 1000
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        running = rec.item() if running is None else 0.98 * running + 0.02 * rec.item()
        if step % 50 == 0:
            history.append((step, running))
            bar.set_postfix(rec=f"{running:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
        bar.update(1)
        if time.monotonic() - last_ckpt > 300:
            checkpoint()
            last_ckpt = time.monotonic()
    bar.close()
    checkpoint()

    psnr = save_sheet(vae, photos, args.run_dir / "reconstructions.png")
    plot_curve(history, args.run_dir / "loss.png", "reconstruction loss (EMA)", log_y=True)
    vae.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(args.out)
    (args.out / "training.json").write_text(json.dumps(
        {"script": "training/train_vae.py", "steps": step, "schedule_steps": args.steps,
         "batch_size": args.batch_size, "crop": args.crop, "lr": args.lr,
         "kl_weight": args.kl_weight, "photos": len(photos), "psnr_256": round(psnr, 2)}, indent=2))
    print(f"step {step}: reconstruction PSNR at 256 px {psnr:.2f} dB -> {args.out}")



if __name__ == "__main__":
    main()
