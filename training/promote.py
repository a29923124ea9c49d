"""Promote a finished training run into the bundled models, after checking it.

    python -m training.promote vae        .data/runs/vae
    python -m training.promote transform  .data/runs/transform.safetensors
    python -m training.promote detectors  .data/runs/detectors/cnn-stage
    python -m training.promote inpainter  .data/runs/cnn_inpainter.safetensors
    python -m training.promote background .data/runs/background.safetensors

Training scripts write only under their ``--out`` (``.data/runs`` in the Makefile); this
is the one step that changes ``indexer/default_model/`` (or, for the training-only CNN
inpainter, ``training/weights/``). It loads what it copies the way the service will,
refuses a run that would not load beside the bundled VAE, and replaces each file
atomically.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from origin_id.detectors.analyzer import FILES, UNET_LARE_FILE, InpaintingAnalyzer
from origin_id.indexer.open_set import FILE_NAME as OPEN_SET_FILE
from origin_id.indexer.open_set import BackgroundSet
from origin_id.indexer.transform import LinearTransform
from origin_id.models.vae import load_vae, vae_fingerprint
from origin_id.models.weights import load_model
from training.cnn_inpainter import DEFAULT_WEIGHTS, FORMAT, CnnInpainter, CnnInpainterConfig

BUNDLED = Path(__file__).resolve().parent.parent / "indexer" / "default_model"
VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


def install(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` atomically (a reader never sees half a file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.promoting")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    print(f"promoted {src} -> {dest}")


def promote_vae(run: Path) -> None:
    load_vae(run)  # refuses a folder that holds no AutoencoderKL
    for name in VAE_FILES:
        install(run / name, BUNDLED / "vae" / name)
    print("the transform, the background set and the inpainting models are tied to the old VAE: "
          "retrain and promote them too")


def promote_transform(run: Path) -> None:
    transform = LinearTransform.load(run)
    fingerprint = vae_fingerprint(load_vae(BUNDLED / "vae"))
    if transform.config.vae_fingerprint != fingerprint:
        raise SystemExit(f"{run} was trained on VAE {transform.config.vae_fingerprint}; the bundled VAE is "
                         f"{fingerprint}")
    if not transform.config.calibration:
        raise SystemExit(f"{run} has no calibrated match threshold (python -m training.calibrate_transform)")
    install(run, BUNDLED / "transform.safetensors")


def promote_detectors(run: Path) -> None:
    vae = load_vae(BUNDLED / "vae")
    InpaintingAnalyzer.load(run, vae, vae_fingerprint=vae_fingerprint(vae))  # complete, consistent, same VAE
    lare = [run / name for name in (FILES["denoiser"], UNET_LARE_FILE) if (run / name).is_file()]
    for src in (run / FILES["detector"], run / FILES["localizer"], *lare):
        install(src, BUNDLED / "inpainting" / src.name)
    for other in {FILES["denoiser"], UNET_LARE_FILE} - {p.name for p in lare}:
        (BUNDLED / "inpainting" / other).unlink(missing_ok=True)


def promote_background(run: Path) -> None:
    from origin_id.indexer.config import Settings
    from origin_id.indexer.model_bundle import ModelBundle

    background = BackgroundSet.load(run)
    version = ModelBundle.load(Settings.from_env({}, inpainting=False, background="none")).version
    if background.model_version != version:
        raise SystemExit(f"{run} was made for model {background.model_version}; the bundled model is {version}")
    if not background.calibration:
        raise SystemExit(f"{run} has no calibrated match margin (python -m training.calibrate_open_set)")
    install(run, BUNDLED / OPEN_SET_FILE)


def promote_inpainter(run: Path) -> None:
    load_model(CnnInpainter, CnnInpainterConfig, run, FORMAT)
    install(run, DEFAULT_WEIGHTS)


PROMOTERS = {"vae": promote_vae, "transform": promote_transform, "detectors": promote_detectors,
             "inpainter": promote_inpainter, "background": promote_background}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=sorted(PROMOTERS))
    p.add_argument("run", type=Path, help="the run's output (a folder, or a file for transform / inpainter)")
    args = p.parse_args(argv)
    if not args.run.exists():
        raise SystemExit(f"{args.run}: no such run output")
    PROMOTERS[args.what](args.run)


if __name__ == "__main__":
    main()
