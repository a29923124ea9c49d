"""Fitting the three inpainting models: the LaRE denoiser, the detector, the localizer.

Each starts new or (``--init-detector`` / ``--init-localizer``) from a saved model to
fine-tune; the detector keeps the checkpoint with the best validation AUC, the localizer
trains on the frozen detector's conditions. Batches may draw a share from extra sample
sets (``training.detector_samples.SCENE_SETS``). Loss curves are written as PNG.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from origin_id.detectors import denoiser as den
from origin_id.detectors import detector as det
from origin_id.detectors import localizer as loc
from origin_id.detectors.analyzer import FILES, LareSource
from origin_id.models.weights import load_model
from training.detector_calibration import auc, copy_move_scores, detector_outputs
from training.detector_samples import batch_tensors
from training.plots import plot_curve


def optimize(opt: torch.optim.Optimizer, sched, loss: torch.Tensor) -> None:
    """One optimiser and schedule step on ``loss`` (the same for all three models)."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def denoiser_loss(model: den.LatentDenoiser, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The denoiser's noise-prediction loss on ``latents``, each mirrored at random (half of them)."""
    z = torch.where(torch.rand(len(latents), 1, 1, 1, generator=generator) < 0.5, latents, latents.flip(-1))
    return model.training_loss(z, generator)


def train_denoiser(train, args, results: Path) -> den.LatentDenoiser:
    latents = torch.from_numpy(train["latent"][~train["label"]].astype(np.float32))
    config = den.DenoiserConfig(latent_scale=float(latents.std()))
    model = den.LatentDenoiser(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=args.denoiser_steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    history = []
    for step in tqdm(range(args.denoiser_steps), desc="denoiser", unit="step", dynamic_ncols=True):
        idx = torch.randint(0, len(latents), (64,), generator=gen)
        loss = denoiser_loss(model, latents[idx], gen)
        optimize(opt, sched, loss)
        history.append((step, float(loss.detach())))
    plot_curve(history, results / "denoiser_loss.png", "noise MSE", smooth=True)
    return model.eval()


def initial_detector(args, fingerprint: str, lare_source: str = "") -> det.InpaintingDetector:
    """A new detector, or (``--init-detector``) a saved one to fine-tune; it must have been
    trained on this VAE's errors and the same kind of LaRE maps."""
    if not args.init_detector:
        return det.InpaintingDetector(det.DetectorConfig(vae_fingerprint=fingerprint, lare_source=lare_source,
                                                         copy_move_floor=args.copy_move_floor or 0.0))
    model = load_model(det.InpaintingDetector, det.DetectorConfig, args.init_detector, det.FORMAT)
    if model.config.vae_fingerprint != fingerprint:
        raise ValueError(f"{args.init_detector} was trained on VAE {model.config.vae_fingerprint}, "
                         f"this VAE is {fingerprint}")
    if bool(model.config.lare_source) != bool(lare_source):
        raise ValueError(f"{args.init_detector} was trained on LaRE maps of "
                         f"{model.config.lare_source or 'the latent denoiser'}, this run uses "
                         f"{lare_source or 'the latent denoiser'}")
    model.config.lare_source = lare_source
    if args.copy_move_floor is not None:
        model.config.copy_move_floor = args.copy_move_floor
    return model.requires_grad_(True)


def batch_shares(args, scene_sets) -> tuple[int, dict[str, int]]:
    """(photo samples, {scene set: samples}) of one ``args.batch`` batch: each named scene
    set takes ``round(batch * share)`` (share: ``args.<name>_share``), photos the rest."""
    per_batch = {name: round(args.batch * getattr(args, f"{name}_share")) for name in scene_sets}
    n_photos = args.batch - sum(per_batch.values())
    if n_photos < 1:
        raise ValueError(f"scene sets take {sum(per_batch.values())} of a batch of {args.batch}")
    return n_photos, per_batch


def lare_maps(denoiser: LareSource, data: dict[str, np.ndarray], desc: str = "LaRE maps") -> np.ndarray:
    """The LaRE maps (float16) of every sample's latent, 64 at a time on the denoiser's device."""
    device = next(denoiser.parameters()).device
    out = []
    for start in tqdm(range(0, len(data["latent"]), 64), desc=desc, unit="batch", dynamic_ncols=True, leave=False):
        z = torch.from_numpy(data["latent"][start:start + 64].astype(np.float32)).to(device)
        out.append(denoiser.lare(z).cpu().half().numpy())
    return np.concatenate(out)



def train_detector(train, val, lare_train, lare_val, args, results: Path, fingerprint: str,
                   scene_sets: dict | None = None, lare_source: str = "") -> det.InpaintingDetector:
    """The detector network, the checkpoint with the best val AUC; the caller then fits the
    copy-move fusion and calibrates the fused verdict. ``scene_sets``: name -> (train
    samples, their LaRE maps) of the extra sample sets, each the source of
    ``round(batch * share)`` samples of every batch (share: ``args.<name>_share``).
    ``lare_source``: "" for the latent denoiser's maps, else the pipeline whose UNet made them."""
    model = initial_detector(args, fingerprint, lare_source)
    if not args.detector_steps:  # refit only the verdict's fusion and calibration (in main)
        if not args.init_detector:
            raise ValueError("--detector-steps 0 needs --init-detector")
        return model.eval().requires_grad_(False)
    config = model.config
    previous = dict(config.training)
    lr_max = args.detector_lr or args.lr
    opt = torch.optim.AdamW(model.parameters(), lr=lr_max, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr_max, total_steps=args.detector_steps, pct_start=0.05)
    rng = np.random.default_rng(args.seed)
    n_photos, per_batch = batch_shares(args, scene_sets or {})
    history, best = [], (-1.0, None)
    # A fine-tune of a detector with a copy-move weight evaluates the fused verdict; the
    # search's scores do not change with the network, so they are computed once.
    val_copy_move = copy_move_scores(val) if config.copy_move_weight else None
    bar = tqdm(range(args.detector_steps), desc="detector", unit="step", dynamic_ncols=True)
    for step in bar:
        model.train()
        parts = []
        for data, lare, n in [(train, lare_train, n_photos)] + [(*scene_sets[k], n) for k, n in per_batch.items()]:
            idx = rng.integers(0, len(data["label"]), n)
            parts.append(batch_tensors(data, idx, lare, rng))
        x, err, lr, mask, y = (torch.cat(t) for t in zip(*parts))
        out = model(x, err, lr)
        mask64 = (F.avg_pool2d(mask, 4) >= 0.5).float()
        dice = loc.soft_dice_loss(torch.sigmoid(out.mask_logit), mask64)
        loss = (F.binary_cross_entropy_with_logits(out.logit, y)
                + F.binary_cross_entropy_with_logits(out.mask_logit, mask64, pos_weight=torch.tensor(3.0))
                + (dice * y).sum() / y.sum().clamp(min=1))
        optimize(opt, sched, loss)
        history.append((step, float(loss.detach())))
        if (step + 1) % args.eval_every == 0 or step + 1 == args.detector_steps:
            score = auc(detector_outputs(model, val, lare_val, val_copy_move), val["label"])
            bar.set_postfix(val_auc=f"{score:.3f}")
            if score > best[0]:
                best = (score, {k: v.clone() for k, v in model.state_dict().items()})
    name = "detector_finetune_loss.png" if args.init_detector else "detector_loss.png"
    plot_curve(history, results / name, "detector loss", smooth=True)
    model.load_state_dict(best[1])
    model.eval()
    config.training = {"steps": args.detector_steps, "batch": args.batch, "lr": lr_max,
                       "train_samples": len(train["label"]), "best_val_auc": round(best[0], 4)}
    for name, n in per_batch.items():
        config.training.update({f"{name}_samples": len(scene_sets[name][0]["label"]), f"{name}_per_batch": n})
    if args.init_detector:
        config.training["fine_tuned_from"] = previous
    return model


def initial_localizer(args, cond_channels: int) -> loc.MaskDiffusionLocalizer:
    """A new localizer, or (``--init-localizer``) a saved one to fine-tune on the new
    detector's conditions (same layout: a fine-tuned detector shifts its features, it does
    not change their shape). ``--localizer-widths``: the new one's widths, or those the saved
    one is narrowed to (``MaskDiffusionLocalizer.narrowed``) before its fine-tune."""
    widths = args.localizer_widths
    if not args.init_localizer:
        config = loc.LocalizerConfig(cond_channels=cond_channels)
        return loc.MaskDiffusionLocalizer(replace(config, widths=widths) if widths else config)
    model = load_model(loc.MaskDiffusionLocalizer, loc.LocalizerConfig, args.init_localizer, loc.FORMAT)
    if model.config.cond_channels != cond_channels:
        raise ValueError(f"{args.init_localizer} takes {model.config.cond_channels} condition channels, "
                         f"this detector gives {cond_channels}")
    if widths and widths != model.config.widths:
        previous = model.config.widths
        model = model.narrowed(widths)
        model.config.training = {**model.config.training, "narrowed_from": previous}
    return model.requires_grad_(True)


def train_localizer(train, cond: np.ndarray, args, results: Path,
                    scene_sets: dict | None = None) -> loc.MaskDiffusionLocalizer:
    """The localizer on the ``train`` samples' conditions ``cond`` from the frozen detector.
    ``scene_sets``: name -> (samples, their conditions) of procedural scene sets (the order
    of the detector's (samples, LaRE maps)), each the source
    of ``round(batch * share)`` samples of every batch, as in the detector's batches."""
    model = initial_localizer(args, cond.shape[1])
    config = model.config
    previous = dict(config.training)
    narrowed_from = previous.pop("narrowed_from", None)
    lr_max = args.localizer_lr or args.lr
    opt = torch.optim.AdamW(model.parameters(), lr=lr_max, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr_max, total_steps=args.localizer_steps,
                                                pct_start=0.05)
    scene_sets = scene_sets or {}
    sources = {"photos": (train, cond), **scene_sets}
    n_photos, per_batch = batch_shares(args, scene_sets)
    counts = {"photos": n_photos, **per_batch}
    masks, pos, neg = {}, {}, {}
    for name, (data, _) in sources.items():
        masks[name] = (F.avg_pool2d(torch.from_numpy(data["mask"]).float()[:, None], 4) >= 0.5).float()
        labels = data["label"].astype(bool)
        pos[name], neg[name] = np.nonzero(labels)[0], np.nonzero(~labels)[0]
    rng = np.random.default_rng(args.seed + 1)
    gen = torch.Generator().manual_seed(args.seed + 1)
    history = []
    model.train()
    for step in tqdm(range(args.localizer_steps), desc="localizer", unit="step", dynamic_ncols=True):
        parts = []
        for name, n in counts.items():
            # Mostly inpainted examples; some clean ones so "nothing here" is a possible answer.
            idx = np.where(rng.random(n) < 0.8, rng.choice(pos[name], n), rng.choice(neg[name], n))
            parts.append((torch.from_numpy(sources[name][1][idx].astype(np.float32)), masks[name][idx]))
        c, m = (torch.cat(t) for t in zip(*parts))
        if rng.random() < 0.5:
            c, m = c.flip(-1), m.flip(-1)
        loss = model.training_loss(c, m, gen)
        optimize(opt, sched, loss)
        history.append((step, float(loss.detach())))
    plot_curve(history, results / "localizer_loss.png", "localizer loss", smooth=True)
    config.training = {"steps": args.localizer_steps, "batch": args.batch, "lr": lr_max}
    for name, n in per_batch.items():
        config.training.update({f"{name}_samples": len(scene_sets[name][0]["label"]), f"{name}_per_batch": n})
    if args.init_localizer:
        config.training["fine_tuned_from"] = previous
    if narrowed_from:
        config.training["narrowed_from"] = narrowed_from
    return model.eval()


def denoiser_beside(detector_path: Path | None) -> den.LatentDenoiser | None:
    """The latent denoiser saved beside ``--init-detector`` (its directory's
    ``denoiser.safetensors``), or None. A fine-tune must read the LaRE maps its detector was
    trained on; a denoiser trained on this run's own samples (a fresh ``--work-dir``, or
    one's own photos) would be another network, and nothing in the detector's checkpoint
    would tell."""
    if detector_path is None or not (path := Path(detector_path).parent / FILES["denoiser"]).is_file():
        return None
    return load_model(den.LatentDenoiser, den.DenoiserConfig, path, den.FORMAT)

