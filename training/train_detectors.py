"""Train the bundled inpainting models: latent denoiser, detector, localizer.

    python -m training.train_detectors --out indexer/default_model/inpainting

Stages (the samples, in chunks of ``CHUNK_SAMPLES``, and the denoiser are cached
under ``--work-dir``, so a rerun that changes the detector or the localizer, or
asks for more samples, starts from there):

1. ``samples``: synthetic inpainting examples (``training.inpainting``) from
   the *train* and *val* photo splits (``training.data.split_of``), seen mask
   types and fills only; real and inpainted examples alike are sometimes
   globally edited and always JPEG-finished. Through the shared VAE: the 256 px
   view, its latent and the pixel reconstruction error. With ``--photos DIR``,
   the train and val parts of that directory's split instead: a deployment can
   train the detectors on its own archive (the bundled models saw 48 photos,
   and their misses come from content unlike those; see README).
2. ``denoiser``: ``LatentDenoiser`` on the latents of pristine train samples;
   with ``--lare-unet``, a pretrained pipeline's UNet instead
   (``detectors.unet_lare``: nothing to train; on a GPU when there is one).
3. ``detector``: ``InpaintingDetector`` (image BCE + coarse-mask BCE/Dice) on
   random ``TRAIN_CROP`` crops under random flips and quarter turns (more
   distinct views of few photos; a crop without painted pixels is a negative),
   the checkpoint with the best validation AUC is kept; then the copy-move
   fusion (``fit_copy_move_weight``: the weight of ``detectors.copy_move``
   scores in the verdict, fit on training samples) and calibration of the
   fused verdict on the val split (``calibrate_detector``): ``threshold`` = the 96th percentile of
   val negatives, pristine and globally edited each (and graphics, when
   given), the highest, i.e. at most ~4% false positives on each, a margin
   under the 5% target; ``localize_threshold`` = the 2nd percentile of val
   positives, so the localizer is skipped only for confidently clean images.
   With ``--graphics-samples``, a share of every batch (``--graphics-share``)
   comes from procedural scenes (``training.data.procedural_image``: flat
   shapes, gradients, sinusoid textures), made into samples exactly like the
   photos: without them the detector reads clean renders and illustrations as
   painted (it learns "smoother than the rest of the image"). With
   ``--grain-samples``, another share (``--grain-share``) comes from grain-heavy
   fields (``training.data.grainy_image``: fractal relief, cells and craters,
   fine grain): fine-tunes with more latent-fill samples learned "a soft region
   among grain is painted" and flagged grainy micrographs. With ``--cnn-samples``,
   a share (``--cnn-share``) comes from the run's own train photos painted with a
   small learned CNN inpainter (``training.cnn_inpainter``, a fill of the family of
   everyday object-removal tools, which the seen fills lacked; training-only, so
   the benchmark's fills stay as they were). Each extra set's val samples are a
   calibration group of their own. With
   ``--init-detector``, the detector starts from a saved one (a fine-tune;
   with ``--detector-steps 0``, only the fusion and calibration are redone).
4. ``localizer``: ``MaskDiffusionLocalizer`` on the frozen detector's condition
   (with ``--localizer-scenes``, the scene sets take the same shares of its batches);
   its ``pixel_threshold`` is the cut with the best mean F1 on val positives.

The shipped models come from nine runs (``make train-detectors``): the photo
stage (``--localizer-steps 0``: denoiser and detector only) and a fine-tune of
its detector with graphics in every batch, both with the three classical fills;
then a short fine-tune with the ``latent`` fill added (diffusion-style fills:
the previous detector scored them 0.80 AUC on val photos), and the localizer
trained on that detector; then a fine-tune of that detector on new samples with
grain-heavy fields in every batch, and of the localizer on its conditions
(measured: test AUC seen 0.949 -> 0.955, unseen fill 0.863 -> 0.869, none of 40
pristine crops of a grainy micrograph flagged, where the same fine-tune without
the grain fields flags 15); then a last fine-tune of the localizer with the
procedural scene sets in its batches too (``--localizer-scenes``; test pixel F1
seen / unseen mask / unseen fill 0.640 / 0.577 / 0.492 -> 0.653 / 0.603 / 0.512); a refit
of the verdict's copy-move term with a floor (``--copy-move-floor``); then that
localizer narrowed from widths 48 / 64 / 96 to 32 / 48 / 96 and fine-tuned
(``--localizer-widths``: 0.651 / 0.596 / 0.521, 45 ms less per query); and last a
fine-tune of both with CNN-inpainter fills in every batch (``--cnn-samples 1200``, 6 of
34 samples; test AUC seen 0.955 -> 0.965, unseen mask 0.941 -> 0.943, unseen fill 0.870
-> 0.902; pixel F1 0.662 / 0.591 / 0.572). A run with
``--init-detector`` reads the LaRE maps of the denoiser saved beside that detector.
``--trace-bands 2`` widens a detector to a second residual band before its
fine-tune, ``--scale-view 192`` has its verdict also read a 192 px view (with
``--detector-steps 0``: refit and recalibrated only), and ``--scale-augment``
shows a share of the batches whole views taken down to the crop size (the reduced
view's input), and ``--train-crop 256`` trains on whole views instead of ``TRAIN_CROP`` crops;
all four measured on the shipped models and not shipped (docs/inpainting-history.md);
so was ``--joint-denoiser-lr``, End4's joint training: the latent denoiser trained with
the detector through each batch's LaRE maps (``JointDenoiser``).
``--init-localizer`` continues from a saved localizer
instead (with ``--init-detector``: a fine-tune of both, e.g. on one's own
photos with ``--photos``). Measured (``bench.inpainting``): the graphics
fine-tune took false positives on procedural scenes of unseen seeds from 0.61
to 0.03, and every photo figure rose (seen AUC 0.891 -> 0.903, val AUC 0.909 ->
0.915). Mixing graphics in from the first step was not tried (it would cost the
full 40-minute detector run).

Writes loss curves (PNG) to ``training/results``.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from bench.inpainting import pixel_scores, roc_auc
from detectors import denoiser as den
from detectors import detector as det
from detectors import localizer as loc
from detectors.analyzer import FILES, InpaintingAnalyzer, LareSource, save_lare_source
from detectors.copy_move import CopyMoveSearch
from detectors.query_mask import upsample_probability
from detectors.unet_lare import UNetLare
from detectors.weights import load_model, save_model
from indexer.transform import vae_fingerprint
from indexer.vae import INPUT_SIZE, load_vae, preprocess
from training.data import (
    grainy_image,
    photo_set_digest,
    photo_source,
    photos_in_split,
    procedural_image,
)
from training.inpainting import (
    FILLS,
    GLOBAL_EDIT_FAMILIES,
    SEEN_MASKS,
    TRAINING_ONLY_FILLS,
    UNSEEN_FILLS,
    fill_version,
    make_sample,
    set_fill_vae,
)
from training.plots import plot_curve

SEEN_FILLS = [f for f in FILLS if f not in UNSEEN_FILLS]
#: Global edits used in training; cartoon and film stay out, to measure how the
#: false-positive rate carries over to edits the detector never saw.
TRAIN_GLOBAL_EDITS = [e for e in GLOBAL_EDIT_FAMILIES if e not in ("cartoon", "film")]
GEOMETRIC = {"crop_resize"}
#: First ``procedural_image`` seeds of the graphics train and val scenes (the
#: benchmark's graphics group starts at ``bench.inpainting.GRAPHICS_SEED``, 900,000).
GRAPHICS_TRAIN_SEED, GRAPHICS_VAL_SEED = 700_000, 800_000


class SceneSet(NamedTuple):
    """An extra sample set: a share of every detector batch and a calibration group of its
    own. Its options are ``--<name>-samples``, ``--<name>-val-samples`` and ``--<name>-share``.
    Procedural scenes (``make_scene``), or the run's own train / val photos painted with other
    fills (``make_scene`` None, ``fills``)."""
    make_scene: Callable[[int], Image.Image] | None
    #: Sample seed of the train set, as an offset from ``--seed``; the val set uses the next one.
    seed_offset: int
    #: Default share of each detector batch.
    share: float
    #: What ``--<name>-samples`` adds (its help text).
    about: str
    first_train_scene: int = GRAPHICS_TRAIN_SEED
    first_val_scene: int = GRAPHICS_VAL_SEED
    #: Fills of its inpainted samples (empty: the run's ``--fills``).
    fills: tuple[str, ...] = ()


SCENE_SETS = {
    "graphics": SceneSet(procedural_image, 5, 0.25,
                         "procedural-scene samples mixed into detector batches (0 = photos only)"),
    "grain": SceneSet(grainy_image, 8, 0.2, "grain-heavy procedural samples (training.data.grainy_image) mixed "
                                            "into detector batches (0 = none)"),
    "cnn": SceneSet(None, 40, 0.18, "train-photo samples painted with the small CNN inpainter "
                                    "(training.cnn_inpainter, a training-only fill) mixed into detector "
                                    "batches (0 = none)", fills=tuple(TRAINING_ONLY_FILLS)),
}


def generate(photos: list[Image.Image], n: int, seed: int, *, masks: list[str], fills: list[str],
             global_edits: list[str], desc: str):
    """n samples, half inpainted; half of the pristine and a quarter of the inpainted globally edited."""
    rng = np.random.default_rng(seed)
    for i in tqdm(range(n), desc=desc, unit="img", dynamic_ncols=True):
        inpainted = i % 2 == 1
        edit = ""
        if rng.random() < (0.25 if inpainted else 0.5):
            choices = [e for e in global_edits if not (inpainted and e in GEOMETRIC)]
            edit = str(rng.choice(choices))
        photo = photos[int(rng.integers(len(photos)))]
        yield make_sample(photo, rng, inpainted=inpainted, masks=masks, fills=fills, global_edit=edit)


def mask_256(mask: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((256, 256), Image.Resampling.BILINEAR)) > 127


@torch.inference_mode()
def featurize(vae, samples, n: int) -> dict[str, np.ndarray]:
    """Samples -> the arrays the detector trains on (256 px view, latent, pixel error, mask)."""
    xs, lats, errs, masks, labels, meta = [], [], [], [], [], []
    for s in samples:
        im = Image.open(io.BytesIO(s.jpeg)).convert("RGB")
        x = preprocess([im])
        z = vae.encode(x).latent_dist.mean
        err = (x - vae.decode(z).sample.clamp(-1, 1)).abs()
        xs.append(((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy())
        lats.append(z[0].numpy().astype(np.float16))
        errs.append(err[0].numpy().astype(np.float16))
        masks.append(mask_256(s.mask))
        labels.append(s.inpainted)
        meta.append({"mask_type": s.mask_type, "fill": s.fill, "global_edit": s.global_edit})
    return {"x": np.stack(xs), "latent": np.stack(lats), "error": np.stack(errs), "mask": np.stack(masks),
            "label": np.asarray(labels), "meta": np.asarray([json.dumps(m) for m in meta])}


def scenes(make_scene, first_seed: int, n_samples: int) -> list[Image.Image]:
    """Procedural scenes for ``n_samples`` samples: one scene per two samples."""
    return [make_scene(first_seed + i) for i in range(max(1, n_samples // 2))]


def load_or_build(path: Path, build) -> dict[str, np.ndarray]:
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


#: Samples per cached training chunk: one chunk is built (and held twice while it is
#: stacked) at a time, which bounds memory; chunk k is generated with seed ``seed + 1000 k``.
CHUNK_SAMPLES = 6000


def load_train_chunks(work_dir: Path, tag: str, n: int, seed: int, build,
                      chunk_samples: int = CHUNK_SAMPLES) -> dict[str, np.ndarray]:
    """``n`` training samples from cached chunks, building the missing ones with
    ``build(count, chunk_seed)``; copied chunk by chunk into preallocated arrays so
    peak memory is the whole set plus one chunk."""
    sizes = [min(chunk_samples, n - start) for start in range(0, n, chunk_samples)]
    out: dict[str, np.ndarray] = {}
    start = 0
    for k, size in enumerate(sizes):
        chunk_seed = seed + 1000 * k
        chunk = load_or_build(work_dir / f"train-{tag}-{size}-s{chunk_seed}.npz",
                              lambda size=size, chunk_seed=chunk_seed: build(size, chunk_seed))
        for key, arr in chunk.items():
            if key not in out:
                # Strings (sample metadata) as objects: chunks differ in their longest one.
                out[key] = np.empty((n, *arr.shape[1:]), object if arr.dtype.kind == "U" else arr.dtype)
            out[key][start:start + size] = arr
        start += size
        del chunk
    return out


#: Side of the random crop the detector trains on (a multiple of 8, the latent grid).
TRAIN_CROP = 192


def batch_tensors(data: dict[str, np.ndarray], idx: np.ndarray, lare: np.ndarray | torch.Tensor,
                  rng: np.random.Generator | None = None, scaled: bool = False, crop: int = TRAIN_CROP):
    """Tensors of samples ``idx``. ``lare``: the LaRE maps of every sample of ``data`` (an
    array), or of samples ``idx`` alone (a tensor, as joint training computes them, with
    gradients). With ``rng``, the same random dihedral transform and
    ``crop`` px crop (aligned to the latent grid; 256 = the whole view) for every map of a
    batch. ``scaled``: the whole view taken down to ``crop`` instead of a crop (image, pixel
    error and mask by area, the LaRE map as it is), as ``InpaintingDetector.scale_logits`` reads it."""
    x = torch.from_numpy(data["x"][idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
    err = torch.from_numpy(data["error"][idx].astype(np.float32))
    lr = lare if isinstance(lare, torch.Tensor) else torch.from_numpy(lare[idx].astype(np.float32))
    mask = torch.from_numpy(data["mask"][idx]).float()[:, None]
    y = torch.from_numpy(data["label"][idx]).float()
    if rng is not None:
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        x, err, lr, mask = (torch.rot90(t.flip(-1) if flip else t, k, (2, 3)) for t in (x, err, lr, mask))
        if scaled:
            x, err, mask = (F.interpolate(t, size=(crop, crop), mode="area") for t in (x, err, mask))
            mask = (mask >= 0.5).float()
        else:
            cells = (x.shape[-1] - crop) // 8
            oy, ox = (int(v) for v in rng.integers(0, cells + 1, 2))
            x, err, mask = (t[..., oy * 8:oy * 8 + crop, ox * 8:ox * 8 + crop] for t in (x, err, mask))
            lr = lr[..., oy:oy + crop // 8, ox:ox + crop // 8]
        y = y * (mask.sum((1, 2, 3)) >= 16)  # the crop cut the painted region out: nothing painted left
    return x, err, lr, mask, y


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of scores against boolean labels, computed as the benchmark computes it."""
    labels = labels.astype(bool)
    return roc_auc(scores[labels], scores[~labels])


def batches(data: dict[str, np.ndarray], batch: int = 32):
    """Index arrays over ``data``'s samples in order, ``batch`` at a time."""
    n = len(data["label"])
    for start in range(0, n, batch):
        yield np.arange(start, min(start + batch, n))


@torch.inference_mode()
def copy_move_scores(data) -> np.ndarray:
    """``CopyMoveSearch`` scores of every sample's 256 px view (the view the service searches)."""
    search = CopyMoveSearch()
    scores = []
    for idx in batches(data):
        x = torch.from_numpy(data["x"][idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
        scores.extend(e.score for e in search(x))
    return np.asarray(scores, np.float32)


@torch.inference_mode()
def detector_outputs(model: det.InpaintingDetector, data, lare, copy_move: np.ndarray | None = None) -> np.ndarray:
    """The probability the service serves (``verdict_logit``: query and mirror averaged, with
    the reduced view's when the model has one, plus the copy-move term when it has a weight
    for it) per sample. ``copy_move``: the samples' ``copy_move_scores``, if already at hand."""
    model.eval()
    if model.config.copy_move_weight and copy_move is None:
        copy_move = copy_move_scores(data)
    probs = []
    for idx in batches(data):
        x, err, lr, _, _ = batch_tensors(data, idx, lare)
        cm = torch.from_numpy(copy_move[idx]) if copy_move is not None else None
        probs.append(torch.sigmoid(model.verdict(x, err, lr, cm)[0]).numpy())
    return np.concatenate(probs)


def fit_copy_move_weight(model: det.InpaintingDetector, data, lare, n: int = 3000, seed: int = 0) -> None:
    """Set ``copy_move_weight``: logistic regression of the label on the network's verdict
    logit (coefficient held at 1) plus ``w * copy_move_evidence(score)`` (with the config's
    ``copy_move_floor``), on ``n`` training samples; w >= 0. Call ``calibrate_detector``
    afterwards: the threshold belongs to the fused verdict."""
    idx = np.sort(np.random.default_rng(seed).choice(len(data["label"]), min(n, len(data["label"])), replace=False))
    subset = {k: v[idx] for k, v in data.items()}
    model.config.copy_move_weight = 0.0
    p = np.clip(detector_outputs(model, subset, lare[idx]), 1e-6, 1 - 1e-6)
    logit = torch.tensor(np.log(p / (1 - p)), dtype=torch.float64)
    evidence = det.copy_move_evidence(torch.tensor(copy_move_scores(subset), dtype=torch.float64),
                                      model.config.copy_move_floor)
    labels = torch.tensor(subset["label"], dtype=torch.float64)
    wb = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([wb], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logit + wb[0] * evidence + wb[1], labels)
        loss.backward()
        return loss

    opt.step(closure)
    weight = max(0.0, float(wb[0].detach()))
    model.config.copy_move_weight = round(weight, 3)
    model.config.training["copy_move"] = {
        "weight": round(weight, 3), "floor": model.config.copy_move_floor, "fit_samples": len(idx),
        "train_auc": {"network": round(auc(logit.numpy(), subset["label"]), 4),
                      "with copy-move": round(auc((logit + weight * evidence).numpy(), subset["label"]), 4)}}


@torch.inference_mode()
def localizer_conditions(model: det.InpaintingDetector, data, lare, mirrored: bool = False) -> np.ndarray:
    """The localizer's condition per sample; with ``mirrored``, that of the mirror image
    (in mirrored coordinates, as ``MaskDiffusionLocalizer.sample_mirrored`` takes it)."""
    model.eval()
    conds = []
    for idx in batches(data):
        x, err, lr, _, _ = batch_tensors(data, idx, lare)
        out = model.mirrored(x, err, lr) if mirrored else model(x, err, lr)
        conds.append(loc.localizer_condition(out.features, out.mask_logit, err.flip(-1) if mirrored else err)
                     .half().numpy())
    return np.concatenate(conds)


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
    trained on this VAE's errors and the same kind of LaRE maps. ``--trace-bands`` sets a new
    detector's residual bands, or widens a saved one's (``InpaintingDetector.with_trace_bands``);
    ``--scale-view`` sets the reduced view its verdict reads (``InpaintingDetector.scale_logits``)."""
    if not args.init_detector:
        return det.InpaintingDetector(det.DetectorConfig(vae_fingerprint=fingerprint, lare_source=lare_source,
                                                         trace_bands=args.trace_bands or 1,
                                                         scale_view=args.scale_view or 0,
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
    if args.trace_bands and args.trace_bands != model.config.trace_bands:
        model = model.with_trace_bands(args.trace_bands)
    if args.scale_view is not None and args.scale_view != model.config.scale_view:
        model = model.with_scale_view(args.scale_view)
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


class JointDenoiser:
    """End4's joint training, in the detector's training loop: the latent denoiser trains with
    the detector (``--joint-denoiser-lr``), each batch's LaRE maps computed with gradients
    (the served fixed-seed draws), and its own noise-prediction loss on the batch's pristine
    latents added (``--denoiser-reg``) so it stays a denoiser. Its val maps are recomputed at
    every evaluation, and the best evaluation keeps the denoiser's weights with the detector's.
    Measured in docs/inpainting-history.md."""

    def __init__(self, denoiser: den.LatentDenoiser, lr: float, reg: float, seed: int):
        if not isinstance(denoiser, den.LatentDenoiser):
            raise ValueError("joint training needs the project's latent denoiser, not a pretrained UNet")
        self.denoiser, self.lr, self.reg = denoiser.requires_grad_(True), lr, reg
        self.generator = torch.Generator().manual_seed(seed)
        self.pristine: list[torch.Tensor] = []

    def maps(self, data: dict[str, np.ndarray], idx: np.ndarray) -> torch.Tensor:
        """LaRE maps of samples ``idx`` with gradients; their pristine latents are kept for the regulariser."""
        self.denoiser.train()
        z = torch.from_numpy(data["latent"][idx].astype(np.float32))
        self.pristine.append(z[~torch.from_numpy(data["label"][idx].astype(bool))])
        return self.denoiser.lare_map(z)

    def regulariser(self) -> torch.Tensor:
        """``denoiser_loss`` on this batch's pristine latents, times ``reg``."""
        z = torch.cat(self.pristine)
        self.pristine = []
        if not self.reg or not len(z):
            return torch.zeros(())
        return self.reg * denoiser_loss(self.denoiser, z, self.generator)


def train_detector(train, val, lare_train, lare_val, args, results: Path, fingerprint: str,
                   scene_sets: dict | None = None, lare_source: str = "", joint: JointDenoiser | None = None):
    """The detector network, the checkpoint with the best val AUC; ``main`` then fits the
    copy-move fusion and calibrates the fused verdict. ``scene_sets``: name -> (train
    samples, their LaRE maps) of the procedural scene sets, each the source of
    ``round(batch * share)`` samples of every batch (share: ``args.<name>_share``).
    ``lare_source``: "" for the latent denoiser's maps, else the pipeline whose UNet made them.
    ``joint``: train the latent denoiser too (its maps then come from it, batch by batch;
    the fixed maps passed in are not read, and the denoiser ends at the best evaluation's weights)."""
    model = initial_detector(args, fingerprint, lare_source)
    if not args.detector_steps:  # refit only the verdict's fusion and calibration (in main)
        if not args.init_detector:
            raise ValueError("--detector-steps 0 needs --init-detector")
        return model.eval().requires_grad_(False)
    config = model.config
    previous = dict(config.training)
    lr_max = args.detector_lr or args.lr
    groups = [{"params": model.parameters(), "lr": lr_max}]
    if joint:
        groups.append({"params": joint.denoiser.parameters(), "lr": joint.lr})
    opt = torch.optim.AdamW(groups, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups],
                                                total_steps=args.detector_steps, pct_start=0.05)
    rng = np.random.default_rng(args.seed)
    n_photos, per_batch = batch_shares(args, scene_sets or {})
    history, best = [], (-1.0, None)
    # A fine-tune of a detector with a copy-move weight evaluates the fused verdict; the
    # search's scores do not change with the network, so they are computed once.
    val_copy_move = copy_move_scores(val) if config.copy_move_weight else None
    bar = tqdm(range(args.detector_steps), desc="detector", unit="step", dynamic_ncols=True)
    for step in bar:
        model.train()
        # Drawn only when asked for, so runs without it keep their random stream.
        scaled = bool(args.scale_augment and rng.random() < args.scale_augment)
        parts = []
        for data, lare, n in [(train, lare_train, n_photos)] + [(*scene_sets[k], n) for k, n in per_batch.items()]:
            idx = rng.integers(0, len(data["label"]), n)
            parts.append(batch_tensors(data, idx, joint.maps(data, idx) if joint else lare, rng, scaled,
                                       args.train_crop))
        x, err, lr, mask, y = (torch.cat(t) for t in zip(*parts))
        out = model(x, err, lr)
        mask64 = (F.avg_pool2d(mask, 4) >= 0.5).float()
        dice = loc.soft_dice_loss(torch.sigmoid(out.mask_logit), mask64)
        loss = (F.binary_cross_entropy_with_logits(out.logit, y)
                + F.binary_cross_entropy_with_logits(out.mask_logit, mask64, pos_weight=torch.tensor(3.0))
                + (dice * y).sum() / y.sum().clamp(min=1))
        if joint:
            loss = loss + joint.regulariser()
        optimize(opt, sched, loss)
        history.append((step, float(loss.detach())))
        if (step + 1) % args.eval_every == 0 or step + 1 == args.detector_steps:
            if joint:
                joint.denoiser.eval()
                lare_val = lare_maps(joint.denoiser, val, "val LaRE maps")
            probs = detector_outputs(model, val, lare_val, val_copy_move)
            score = auc(probs, val["label"])
            bar.set_postfix(val_auc=f"{score:.3f}")
            if score > best[0]:
                best = (score, {k: v.clone() for k, v in model.state_dict().items()},
                        {k: v.clone() for k, v in joint.denoiser.state_dict().items()} if joint else None)
    name = "detector_finetune_loss.png" if args.init_detector else "detector_loss.png"
    plot_curve(history, results / name, "detector loss", smooth=True)
    model.load_state_dict(best[1])
    model.eval()
    if joint:
        joint.denoiser.load_state_dict(best[2])
        joint.denoiser.eval().requires_grad_(False)
    config.training = {"steps": args.detector_steps, "batch": args.batch, "lr": lr_max,
                       "train_samples": len(train["label"]), "best_val_auc": round(best[0], 4)}
    if args.scale_augment:
        config.training["scale_augment"] = args.scale_augment
    if args.train_crop != TRAIN_CROP:
        config.training["train_crop"] = args.train_crop
    if joint:
        config.training["joint_denoiser"] = {"lr": joint.lr, "reg": joint.reg}
    for name, n in per_batch.items():
        config.training.update({f"{name}_samples": len(scene_sets[name][0]["label"]), f"{name}_per_batch": n})
    if args.init_detector:
        config.training["fine_tuned_from"] = previous
    return model


def calibrate_detector(model: det.InpaintingDetector, val, lare_val, scene_sets: dict | None = None) -> None:
    """Set ``threshold`` and ``localize_threshold`` from the val split.

    ``threshold``: the 96th percentile of the negatives' probabilities, taken for
    pristine and for globally edited photos separately (and for the negatives of
    each procedural scene set's val samples, ``scene_sets``: name -> (samples,
    LaRE maps)), the highest, so each group stays at or under ~4% false positives
    (the target is 5% for each). ``localize_threshold``: the 2nd percentile of the
    photo positives."""
    probs = detector_outputs(model, val, lare_val)
    labels = val["label"].astype(bool)
    edited = np.array([bool(json.loads(m)["global_edit"]) for m in val["meta"]])
    groups = {"pristine": ~labels & ~edited, "globally edited": ~labels & edited}
    negatives = {name: probs[g] for name, g in groups.items()}
    scene_outputs = {}
    for name, (data, lare) in (scene_sets or {}).items():
        scene_outputs[name] = detector_outputs(model, data, lare), data["label"].astype(bool)
        negatives[name] = scene_outputs[name][0][~scene_outputs[name][1]]
    threshold = max(float(np.quantile(p, 0.96)) for p in negatives.values())
    config = model.config
    config.threshold = threshold
    config.localize_threshold = float(min(np.quantile(probs[labels], 0.02), threshold))
    config.calibration = {
        "data": f"val photo split, {int(groups['pristine'].sum())} pristine and "
                f"{int(groups['globally edited'].sum())} globally edited negatives, "
                f"{int(labels.sum())} inpainted (seen masks and fills)",
        "rule": "threshold = the highest of the 96th percentiles of each negative group "
                "(<= 5% false positives on each, with margin); "
                "localize_threshold = 2nd percentile of photo positives",
        "val_auc": round(auc(probs, val["label"]), 4),
        "val_fpr": {name: round(float((p >= threshold).mean()), 4) for name, p in negatives.items()},
        "val_tpr": round(float((probs[labels] >= threshold).mean()), 4),
    }
    for name, (scene_probs, scene_labels) in scene_outputs.items():
        config.calibration["data"] += (f"; {name} val set, {int((~scene_labels).sum())} clean and "
                                       f"{int(scene_labels.sum())} inpainted samples")
        config.calibration[f"{name}_val_auc"] = round(auc(scene_probs, scene_labels), 4)


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


def calibrate_pixel_threshold(localizer: loc.MaskDiffusionLocalizer, cond: np.ndarray, mirrored_cond: np.ndarray,
                              val, candidates: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)):
    """``pixel_threshold`` = the cut of the averaged mask probability (query and mirror, as
    served) with the best mean F1 over the val split's inpainted samples (masks compared at
    256 px)."""
    pos = np.nonzero(val["label"])[0]

    def rows(c: np.ndarray, s: int) -> torch.Tensor:
        return torch.from_numpy(c[pos[s:s + 32]].astype(np.float32))
    probs = np.concatenate([localizer.sample_mirrored(rows(cond, s), rows(mirrored_cond, s)).float().numpy()[:, 0]
                            for s in range(0, len(pos), 32)])
    maps = [upsample_probability(p, (256, 256)) for p in probs]
    f1 = {c: float(np.mean([pixel_scores(m >= c, val["mask"][i])[0] for m, i in zip(maps, pos)]))
          for c in candidates}
    best = max(f1, key=f1.get)
    localizer.config.pixel_threshold = best
    localizer.config.calibration = {"data": f"val photo split, {len(pos)} inpainted (seen masks and fills)",
                                    "rule": "pixel_threshold with the best mean F1",
                                    "f1_by_threshold": {str(c): round(v, 4) for c, v in f1.items()}}


def training_photos(directory: Path | None, max_photos: int,
                    fingerprint: str) -> tuple[list[Image.Image], list[Image.Image], str, str]:
    """(train photos, val photos, where they came from, cache tag) for the allowed photos, or
    for the photos under ``directory``. The tag names the cached samples and denoiser: the
    VAE's fingerprint plus a digest of the photos, so a changed photo set (one's own, or
    the allowed set with or without the other Debian releases) never reuses old samples."""
    photos, source = photo_source(directory, max_photos)
    train_photos, val_photos = photos_in_split("train", photos), photos_in_split("val", photos)
    if not train_photos or not val_photos:
        raise SystemExit(f"{source}: {len(photos)} usable photos split into {len(train_photos)} train and "
                         f"{len(val_photos)} val; both are needed (a few dozen photos at least, hundreds "
                         f"to gain over the bundled models)")
    return train_photos, val_photos, source, f"{fingerprint[:8]}-{photo_set_digest(train_photos + val_photos)}"


def denoiser_beside(detector_path: Path | None) -> den.LatentDenoiser | None:
    """The latent denoiser saved beside ``--init-detector`` (its directory's
    ``denoiser.safetensors``), or None. A fine-tune must read the LaRE maps its detector was
    trained on; a denoiser trained on this run's own samples (a fresh ``--work-dir``, or
    one's own photos) would be another network, and nothing in the detector's checkpoint
    would tell."""
    if detector_path is None or not (path := Path(detector_path).parent / FILES["denoiser"]).is_file():
        return None
    return load_model(den.LatentDenoiser, den.DenoiserConfig, path, den.FORMAT)


def widths_list(text: str) -> list[int]:
    """``--localizer-widths``: "32,48,96" -> [32, 48, 96]."""
    return [int(width) for width in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", default="indexer/default_model/vae")
    p.add_argument("--out", type=Path, default=Path("indexer/default_model/inpainting"))
    p.add_argument("--work-dir", type=Path, default=Path(".data/detectors"))
    p.add_argument("--results", type=Path, default=Path("training/results"))
    p.add_argument("--train-samples", type=int, default=3000)
    p.add_argument("--val-samples", type=int, default=600)
    p.add_argument("--denoiser-steps", type=int, default=1500)
    p.add_argument("--photos", type=Path, default=None,
                   help="train and calibrate on your own photos instead of the allowed ones: the train and "
                        "val parts of this directory's photo split (training.data.split_of, about 70%% / 15%%; "
                        "bench.inpainting --photos DIR --split test measures on the rest)")
    p.add_argument("--max-photos", type=int, default=2000,
                   help="with --photos, decode at most this many files (evenly spaced; all are held in memory)")
    p.add_argument("--lare-unet", default="",
                   help="compute the LaRE map with this pretrained pipeline's UNet (Hugging Face id or local "
                        "folder with unet/, scheduler/, text_encoder/, tokenizer/) instead of training the "
                        "project's latent denoiser; needs transformers (the 'pretrained' extra)")
    p.add_argument("--lare-prompt", default="", help="text the UNet is conditioned on (LaRE^2: empty)")
    p.add_argument("--detector-steps", type=int, default=2500)
    p.add_argument("--localizer-steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--trace-bands", type=int, default=0,
                   help="residual bands the detector's trace branch sees (0 = 1 for a new detector, "
                        "the --init-detector's own otherwise; more widens it)")
    p.add_argument("--scale-view", type=int, default=None,
                   help="side (px) of the reduced view the verdict also reads, with its mirror "
                        "(0 = none; default: the --init-detector's own, none for a new detector)")
    p.add_argument("--train-crop", type=int, default=TRAIN_CROP,
                   help=f"side (px, a multiple of 16, at most {INPUT_SIZE}) of the detector's random training "
                        f"crops; {INPUT_SIZE} = the whole view the service reads")
    p.add_argument("--scale-augment", type=float, default=0.0,
                   help="share of detector batches that show whole views taken down to the training crop's "
                        "size instead of crops (the reduced view --scale-view reads)")
    p.add_argument("--copy-move-floor", type=float, default=None,
                   help="copy-move scores up to this add nothing to the verdict (detectors.detector."
                        "copy_move_evidence; default: the --init-detector's own, 0 for a new detector)")
    p.add_argument("--detector-lr", type=float, default=0.0, help="peak detector LR (0 = --lr)")
    p.add_argument("--joint-denoiser-lr", type=float, default=0.0,
                   help="End4's joint training: peak LR of the latent denoiser, trained with the detector "
                        "through each batch's LaRE maps (0 = frozen, its maps computed once)")
    p.add_argument("--denoiser-reg", type=float, default=1.0,
                   help="weight of the denoiser's own noise-prediction loss in joint training")
    p.add_argument("--init-detector", type=Path, default=None,
                   help="a detector.safetensors to fine-tune instead of training a new one")
    p.add_argument("--init-localizer", type=Path, default=None,
                   help="a localizer.safetensors to fine-tune instead of training a new one")
    p.add_argument("--localizer-lr", type=float, default=0.0, help="peak localizer LR (0 = --lr)")
    p.add_argument("--localizer-widths", type=widths_list, default=None,
                   help="the localizer's three widths, comma-separated (default 48,64,96); with "
                        "--init-localizer, the saved one is narrowed to them before the fine-tune")
    for name, scene_set in SCENE_SETS.items():
        p.add_argument(f"--{name}-samples", type=int, default=0, help=scene_set.about)
        p.add_argument(f"--{name}-val-samples", type=int, default=300)
        p.add_argument(f"--{name}-share", type=float, default=scene_set.share,
                       help=f"share of each detector batch (and localizer batch, with --localizer-scenes) "
                            f"drawn from the {name} samples")
    p.add_argument("--localizer-scenes", action="store_true",
                   help="mix the scene sets into localizer batches too, at the same shares")
    p.add_argument("--fills", default=",".join(SEEN_FILLS),
                   help="comma-separated fills the samples use, some of the seen fills (default: all; the "
                        "shipped models' first two runs: all but latent, see the Makefile)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.localizer_scenes and not any(getattr(args, f"{name}_samples") for name in SCENE_SETS):
        p.error("--localizer-scenes needs scene samples: " + " or ".join(f"--{n}-samples" for n in SCENE_SETS))
    if not 16 <= args.train_crop <= INPUT_SIZE or args.train_crop % 16:  # the detector wants multiples of 16
        p.error(f"--train-crop must be a multiple of 16 from 16 to {INPUT_SIZE} (the view), got {args.train_crop}")
    if args.joint_denoiser_lr and (args.lare_unet or not args.detector_steps):
        p.error("--joint-denoiser-lr trains the latent denoiser with the detector: it needs --detector-steps "
                "and cannot train a pretrained UNet (--lare-unet)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.time()

    vae = load_vae(args.vae).eval()
    fingerprint = vae_fingerprint(vae)
    set_fill_vae(vae)
    fills = [f for f in args.fills.split(",") if f]
    if not fills or set(fills) - set(SEEN_FILLS):
        raise SystemExit(f"--fills must name some of {SEEN_FILLS} (held out: {UNSEEN_FILLS})")
    common = {"masks": SEEN_MASKS, "fills": fills, "global_edits": TRAIN_GLOBAL_EDITS}
    train_photos, val_photos, photo_source, tag = training_photos(args.photos, args.max_photos, fingerprint)
    # Cached samples are named by the photos, the VAE and (when not the default) the fills.
    sample_tag = tag if fills == SEEN_FILLS else f"{tag}-{'+'.join(fills)}"
    print(f"photos: {photo_source}, {len(train_photos)} train / {len(val_photos)} val")
    train = load_train_chunks(args.work_dir, sample_tag, args.train_samples, args.seed, lambda n, seed: featurize(
        vae, generate(train_photos, n, seed, desc="train samples", **common), n))
    val = load_or_build(args.work_dir / f"val-{sample_tag}-{args.val_samples}.npz", lambda: featurize(
        vae, generate(val_photos, args.val_samples, args.seed + 7, desc="val samples", **common),
        args.val_samples))

    if args.lare_unet:
        denoiser = UNetLare.from_pretrained(args.lare_unet, float(vae.config.scaling_factor), args.lare_prompt)
    elif (beside := denoiser_beside(args.init_detector)) is not None:
        denoiser = beside
        print(f"LaRE maps: the latent denoiser beside {args.init_detector}")
    else:
        denoiser_path = args.work_dir / f"denoiser-{tag}.safetensors"
        if denoiser_path.exists():
            denoiser = load_model(den.LatentDenoiser, den.DenoiserConfig, denoiser_path, den.FORMAT)
        else:
            denoiser = train_denoiser(train, args, args.results)
            save_model(denoiser, denoiser_path, den.FORMAT)
    # A pretrained UNet is worth a GPU when there is one (the maps are computed once per sample).
    lare_device = torch.device("cuda" if args.lare_unet and torch.cuda.is_available() else "cpu")
    denoiser.to(lare_device)

    def lare_of(data):
        return lare_maps(denoiser, data)

    lare_train, lare_val = lare_of(train), lare_of(val)

    def scene_samples(name: str, split: str, n: int):
        spec = SCENE_SETS[name]
        if spec.make_scene is None:
            images = train_photos if split == "train" else val_photos
        else:
            images = scenes(spec.make_scene, spec.first_train_scene if split == "train" else spec.first_val_scene, n)
        seed = args.seed + spec.seed_offset + (split != "train")
        kind = {**common, "fills": list(spec.fills)} if spec.fills else common
        set_tag = sample_tag if not spec.fills else tag
        set_tag = "-".join([set_tag, *filter(None, map(fill_version, spec.fills))])
        data = load_or_build(args.work_dir / f"{name}-{split}-{set_tag}-{n}-s{seed}.npz", lambda: featurize(
            vae, generate(images, n, seed, desc=f"{name} {split} samples", **kind), n))
        return data, lare_of(data)

    scene_train, scene_val = {}, {}
    for name in SCENE_SETS:
        if getattr(args, f"{name}_samples"):
            scene_train[name] = scene_samples(name, "train", getattr(args, f"{name}_samples"))
            scene_val[name] = scene_samples(name, "val", getattr(args, f"{name}_val_samples"))
    joint = (JointDenoiser(denoiser, args.joint_denoiser_lr, args.denoiser_reg, args.seed)
             if args.joint_denoiser_lr else None)
    detector = train_detector(train, val, lare_train, lare_val, args, args.results, fingerprint, scene_train,
                              denoiser.config.source if isinstance(denoiser, UNetLare) else "", joint)
    if joint:  # the denoiser changed: everything after reads its new maps
        lare_train, lare_val = lare_of(train), lare_of(val)
        scene_train = {name: (data, lare_of(data)) for name, (data, _) in scene_train.items()}
        scene_val = {name: (data, lare_of(data)) for name, (data, _) in scene_val.items()}
    detector.config.training["photos"] = {"source": photo_source, "train": len(train_photos),
                                          "val": len(val_photos)}
    fit_copy_move_weight(detector, train, lare_train, seed=args.seed)
    calibrate_detector(detector, val, lare_val, scene_val)
    print("copy-move fusion:", json.dumps(detector.config.training["copy_move"]))
    print("detector calibration:", json.dumps(detector.config.calibration))
    if args.localizer_steps == 0:
        # The photo stage of the shipped recipe: only what the fine-tune starts from.
        save_lare_source(denoiser.cpu(), args.out)
        save_model(detector, args.out / FILES["detector"], det.FORMAT)
        print(f"saved denoiser and detector (no localizer) to {args.out} in {(time.time() - started) / 60:.1f} min")
        return
    cond = localizer_conditions(detector, train, lare_train)
    localizer_scenes = ({name: (scene_train[name][0], localizer_conditions(detector, *scene_train[name]))
                         for name in scene_train} if args.localizer_scenes else None)
    localizer = train_localizer(train, cond, args, args.results, localizer_scenes)
    calibrate_pixel_threshold(localizer, localizer_conditions(detector, val, lare_val),
                              localizer_conditions(detector, val, lare_val, mirrored=True), val)
    print("localizer calibration:", json.dumps(localizer.config.calibration))
    analyzer = InpaintingAnalyzer(vae, denoiser.cpu(), detector, localizer)
    analyzer.save(args.out)
    print(f"saved to {args.out} in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
