"""Fine-tune the bundled VAE's encoder, with W, for invariance to edits (issue 39, item 2).

    python -m training.train_invariant_encoder --minutes 90      # resumable; run it again to go on

The ID2 contract is kept: the index embedding is still this AutoencoderKL's latent times
a linear map. What changes is that the encoder itself learns, not only W: a linear map on
a frozen latent cannot undo what the encoder does not keep (a colour turn, a re-drawing),
so the encoder is trained the way copy-detection backbones are (SSCD): two edited views
of each origin, an InfoNCE loss over the batch on the L2-normalised ``W @ latent``, W
learned with the encoder from the shipped one.

The decoder is frozen and a reconstruction term (L1 and L1 on gradients, through the
frozen decoder, on unedited origins) keeps every latent decodable by it, so the
inpainting detectors' pixel-error input keeps its meaning; the detectors still see
changed latents and are retrained on the result before it ships
(``training.train_detectors``), as W is re-fitted and the decision recalibrated.

Origins are those of ``training.train_transform`` (train-split photo tiles, the
``TRAIN_PACKAGES`` pictures and their tiles, procedural scenes); edits are the seen
families of ``training.edits`` only. Progress (rate, ETA) on the terminal, a loss curve
in ``--run-dir``; a checkpoint every few minutes. At the end, and with ``--evaluate``
alone, the diagnostic top-1 (whole-image vectors, seen edits, val-split photo tiles and
procedural scenes no step trained on) of the start and of the result is printed: a
quick signal, not the benchmark of record (``bench.heldout``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from origin_id.indexer.transform import LinearTransform
from origin_id.models.vae import load_vae, preprocess, vae_fingerprint
from training.data import allowed_photos, photo_tiles, photos_in_split, procedural_image
from training.edits import random_seen_edit
from training.plots import plot_curve
from training.train_transform import TRAIN_DEBS, TRAIN_PACKAGES, build_origins
from training.train_vae import lr_at, reconstruction_loss


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` and of ``b`` are the same origin, every other row
    of the batch (both sides) a negative. Inputs L2-normalised, (n, d)."""
    z = torch.cat([a, b])
    sims = z @ z.T / temperature
    sims.fill_diagonal_(float("-inf"))
    n = len(a)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sims, targets)


class InvariantEncoder(torch.nn.Module):
    """The VAE (decoder frozen) and W, trained together; ``embed`` is the service's
    embedding (``Embedder.project(encode(x))``) up to W's normalisation."""

    def __init__(self, vae, transform: LinearTransform):
        super().__init__()
        self.vae, self.transform = vae, transform
        for module in (vae.decoder, vae.post_quant_conv):
            module.requires_grad_(False)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.mean

    def embed(self, latents: torch.Tensor) -> torch.Tensor:
        return self.transform(latents.flatten(1))

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


@torch.inference_mode()
def diagnostic_top1(model: InvariantEncoder, gallery: list[Image.Image], queries: list[Image.Image],
                    truth: np.ndarray) -> float:
    """Top-1 of edited queries against the gallery, whole-image vectors (one per image)."""
    def vectors(images):
        return torch.cat([model.embed(model.latents(preprocess(images[s:s + 32])))
                          for s in range(0, len(images), 32)])
    was_training = model.training
    model.eval()
    g, q = vectors(gallery), vectors(queries)
    model.train(was_training)
    return float(((q @ g.T).argmax(1).numpy() == truth).mean())


def diagnostic_set(n_gallery: int, n_queries: int, seed: int) -> tuple[list, list, np.ndarray]:
    """Val-split photo tiles (hard negatives of each other) and procedural scenes from a
    seed range no training uses; queries are seen edits of gallery images."""
    rng = np.random.default_rng(seed)
    gallery = [t for photo in photos_in_split("val", allowed_photos()) for t in photo_tiles(photo, 320, 160)]
    gallery = gallery[:n_gallery // 2]
    gallery += [procedural_image(8_000_000 + i, size=320) for i in range(n_gallery - len(gallery))]
    truth = rng.choice(len(gallery), n_queries, replace=False)
    queries = [random_seen_edit(gallery[int(i)], np.random.default_rng(int(i) + seed)) for i in truth]
    return gallery, queries, truth


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.train_invariant_encoder",
                                description=__doc__.splitlines()[0])
    p.add_argument("--vae", default="indexer/default_model/vae", help="start: HF id or directory")
    p.add_argument("--transform", type=Path, default=Path("indexer/default_model/transform.safetensors"),
                   help="start of W (trained on that VAE)")
    p.add_argument("--run-dir", type=Path, default=Path(".data/runs/invariant-encoder"))
    p.add_argument("--origins", type=int, default=4000)
    p.add_argument("--packages", default=",".join(TRAIN_PACKAGES))
    p.add_argument("--debs", type=Path, default=TRAIN_DEBS)
    p.add_argument("--per-batch", type=int, default=16, help="origins per step (two views each)")
    p.add_argument("--steps", type=int, default=3000, help="schedule length (cosine decay)")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--recon-weight", type=float, default=1.0)
    p.add_argument("--recon-images", type=int, default=4, help="unedited origins reconstructed per step")
    p.add_argument("--diagnostic", type=int, nargs=2, default=(600, 300), metavar=("GALLERY", "QUERIES"))
    p.add_argument("--evaluate", action="store_true", help="only print the diagnostic of the checkpoint")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    args.run_dir.mkdir(parents=True, exist_ok=True)

    model = InvariantEncoder(load_vae(args.vae), LinearTransform.load(args.transform))
    start_fingerprint = vae_fingerprint(model.vae)
    opt = torch.optim.AdamW(model.trainable(), lr=args.lr, weight_decay=1e-4)
    step, history = 0, []
    ckpt = args.run_dir / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        if state["start_fingerprint"] != start_fingerprint:
            raise SystemExit(f"{ckpt} continues another start than {args.vae}: use another --run-dir")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, history = state["step"], state["history"]
        print(f"resumed at step {step}")
    gallery, queries, truth = diagnostic_set(*args.diagnostic, seed=args.seed + 11)
    if args.evaluate:
        print(json.dumps({"step": step, "diagnostic top-1": diagnostic_top1(model, gallery, queries, truth)}))
        return

    origins = build_origins(args.origins, args.seed, packages=[p for p in args.packages.split(",") if p],
                            debs=args.debs)
    print(f"{len(origins)} origins; {len(model.trainable())} trainable tensors")
    rng = np.random.default_rng(args.seed + step)

    def checkpoint() -> None:
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "history": history,
                    "start_fingerprint": start_fingerprint}, tmp)
        tmp.replace(ckpt)

    model.train()
    deadline, last_save = time.monotonic() + args.minutes * 60, time.monotonic()
    bar = tqdm(total=args.steps, initial=step, desc="invariant encoder", unit="step", dynamic_ncols=True)
    while step < args.steps and time.monotonic() < deadline:
        lr = lr_at(step, args.steps, args.lr, warmup=100)
        for group in opt.param_groups:
            group["lr"] = lr
        picked = [origins[int(i)] for i in rng.choice(len(origins), args.per_batch, replace=False)]
        # One view is the origin itself half the time: the gallery holds unedited images.
        first = [im if rng.random() < 0.5 else random_seen_edit(im, rng) for im in picked]
        second = [random_seen_edit(im, rng) for im in picked]
        x = preprocess(first + second).contiguous()
        latents = model.latents(x)
        embedded = model.embed(latents)
        contrastive = info_nce(embedded[:args.per_batch], embedded[args.per_batch:], args.temperature)
        originals = preprocess(picked[:args.recon_images]).contiguous()
        recon = model.vae.decode(model.latents(originals)).sample
        reconstruction = reconstruction_loss(recon, originals)
        loss = contrastive + args.recon_weight * reconstruction
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable(), 1.0)
        opt.step()
        step += 1
        history.append((step, contrastive.item(), reconstruction.item()))
        bar.update(1)
        bar.set_postfix(nce=f"{history[-1][1]:.3f}", rec=f"{history[-1][2]:.4f}", lr=f"{lr:.1e}")
        if time.monotonic() - last_save > 300:
            checkpoint()
            last_save = time.monotonic()
    bar.close()
    checkpoint()
    plot_curve([(s, c) for s, c, _ in history], args.run_dir / "loss.png", "InfoNCE loss", smooth=True)

    model.eval()
    start = InvariantEncoder(load_vae(args.vae), LinearTransform.load(args.transform))
    result = {"step": step, "diagnostic top-1, start": diagnostic_top1(start, gallery, queries, truth),
              "diagnostic top-1, now": diagnostic_top1(model, gallery, queries, truth),
              "reconstruction L1, last 50 steps": float(np.mean([r for _, _, r in history[-50:]]))}
    out = args.run_dir / "result"
    model.vae.save_pretrained(out / "vae")
    transform = model.transform
    transform.config.vae_fingerprint = vae_fingerprint(model.vae)
    # The start's threshold was calibrated for the start's embedding: dropped, so that
    # ``training.promote`` refuses this W until ``training.calibrate_transform`` has run.
    transform.config.calibration = {}
    transform.config.training = {"script": "training/train_invariant_encoder.py", "loss": "InfoNCE",
                                 "temperature": args.temperature, "steps": step, "lr": args.lr,
                                 "per_batch": args.per_batch, "origins": len(origins),
                                 "recon_weight": args.recon_weight}
    transform.save(out / "transform.safetensors")
    (out / "training.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"wrote {out}: re-fit W (training.train_transform --vae {out / 'vae'}), recalibrate and retrain "
          f"the detectors before promoting")


if __name__ == "__main__":
    main()
