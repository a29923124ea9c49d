"""Samples the inpainting models train and calibrate on, and the batches made of them.

A sample is a photo (or procedural scene) crop, pristine or with a region painted in by
one of the seen fills (``training.inpainting``), globally edited at times and always
JPEG-finished, seen through the shared VAE: the 256 px view, its latent, the pixel
reconstruction error, the mask. Photos come from the *train* and *val* splits
(``training.data.split_of``), or from one's own directory (``--photos``).

Samples are generated once and cached under the work directory, named by what decides
them (the VAE's fingerprint, a digest of the photos, the fills, the seed), so a rerun
that changes the models, or asks for more samples, starts from there.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from origin_id.models.vae import preprocess
from training.data import grainy_image, photo_set_digest, photo_source, photos_in_split, procedural_image
from training.inpainting import (
    FILLS,
    GLOBAL_EDIT_FAMILIES,
    SEEN_MASKS,
    TRAINING_ONLY_FILLS,
    UNSEEN_FILLS,
    fill_version,
    make_sample,
)

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


class SampleSource:
    """The samples of one run, built on first use and cached under ``work_dir``.

    Cache names hold what decides a sample set: ``tag`` (the VAE's fingerprint and a digest
    of the photos), the fills when not the default ones, the count and the seed."""

    def __init__(self, vae, work_dir: Path, train_photos: list[Image.Image], val_photos: list[Image.Image],
                 fills: list[str], tag: str, seed: int):
        self.vae, self.work_dir, self.seed, self.tag = vae, work_dir, seed, tag
        self.photos = {"train": train_photos, "val": val_photos}
        self.kind = {"masks": SEEN_MASKS, "fills": fills, "global_edits": TRAIN_GLOBAL_EDITS}
        self.sample_tag = tag if fills == SEEN_FILLS else f"{tag}-{'+'.join(fills)}"

    def photo_samples(self, n_train: int, n_val: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(train, val) samples of the run's photos: train from cached chunks, val in one file."""
        train = load_train_chunks(self.work_dir, self.sample_tag, n_train, self.seed, lambda n, seed: featurize(
            self.vae, generate(self.photos["train"], n, seed, desc="train samples", **self.kind), n))
        val = load_or_build(self.work_dir / f"val-{self.sample_tag}-{n_val}.npz", lambda: featurize(
            self.vae, generate(self.photos["val"], n_val, self.seed + 7, desc="val samples", **self.kind), n_val))
        return train, val

    def scene_samples(self, name: str, split: str, n: int) -> dict[str, np.ndarray]:
        """``n`` samples of the extra set ``name`` (``SCENE_SETS``) for ``split``: procedural
        scenes of their own seeds, or the run's photos painted with the set's own fills."""
        spec = SCENE_SETS[name]
        if spec.make_scene is None:
            images = self.photos[split]
        else:
            images = scenes(spec.make_scene, spec.first_train_scene if split == "train" else spec.first_val_scene, n)
        seed = self.seed + spec.seed_offset + (split != "train")
        kind = {**self.kind, "fills": list(spec.fills)} if spec.fills else self.kind
        set_tag = "-".join([self.sample_tag if not spec.fills else self.tag,
                            *filter(None, map(fill_version, spec.fills))])
        return load_or_build(self.work_dir / f"{name}-{split}-{set_tag}-{n}-s{seed}.npz", lambda: featurize(
            self.vae, generate(images, n, seed, desc=f"{name} {split} samples", **kind), n))


#: Side of the random crop the detector trains on (a multiple of 8, the latent grid).
TRAIN_CROP = 192



def batch_tensors(data: dict[str, np.ndarray], idx: np.ndarray, lare: np.ndarray,
                  rng: np.random.Generator | None = None):
    """Tensors of samples ``idx``; ``lare``: the LaRE maps of every sample of ``data``. With
    ``rng``, the same random dihedral transform and ``TRAIN_CROP`` px crop (aligned to the
    latent grid) for every map of a batch; a crop that cut the painted region out is a
    negative."""
    x = torch.from_numpy(data["x"][idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
    err = torch.from_numpy(data["error"][idx].astype(np.float32))
    lr = torch.from_numpy(lare[idx].astype(np.float32))
    mask = torch.from_numpy(data["mask"][idx]).float()[:, None]
    y = torch.from_numpy(data["label"][idx]).float()
    if rng is not None:
        k, flip = int(rng.integers(4)), bool(rng.random() < 0.5)
        x, err, lr, mask = (torch.rot90(t.flip(-1) if flip else t, k, (2, 3)) for t in (x, err, lr, mask))
        cells = (x.shape[-1] - TRAIN_CROP) // 8
        oy, ox = (int(v) for v in rng.integers(0, cells + 1, 2))
        x, err, mask = (t[..., oy * 8:oy * 8 + TRAIN_CROP, ox * 8:ox * 8 + TRAIN_CROP] for t in (x, err, mask))
        lr = lr[..., oy:oy + TRAIN_CROP // 8, ox:ox + TRAIN_CROP // 8]
        y = y * (mask.sum((1, 2, 3)) >= 16)  # the crop cut the painted region out: nothing painted left
    return x, err, lr, mask, y


def batches(data: dict[str, np.ndarray], batch: int = 32):
    """Index arrays over ``data``'s samples in order, ``batch`` at a time."""
    n = len(data["label"])
    for start in range(0, n, batch):
        yield np.arange(start, min(start + batch, n))

