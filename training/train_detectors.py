"""Train the inpainting models (latent denoiser, detector, localizer): the command line.

    python -m training.train_detectors --out .data/detectors/runs/NAME [options]

One run: samples (``training.detector_samples``, cached under ``--work-dir``), the LaRE
source (the project's ``LatentDenoiser``, trained here or read beside
``--init-detector``, or a pretrained pipeline's UNet with ``--lare-unet``), the detector
(new or fine-tuned), its copy-move fusion and calibration, then the localizer on the
frozen detector's conditions (``training.detector_fitting``,
``training.detector_calibration``). ``--localizer-steps 0`` stops after the detector.

A run writes only under ``--out``: the bundled models change only when a finished run is
promoted (``make promote-detectors RUN=DIR``). The bundled models' recipe, a chain of runs
each starting from the one before, is the ``train-detectors`` target of the Makefile;
why each step is there is in docs/inpainting-history.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from origin_id.detectors import denoiser as den
from origin_id.detectors import detector as det
from origin_id.detectors.analyzer import FILES, InpaintingAnalyzer, save_lare_source
from origin_id.detectors.unet_lare import UNetLare
from origin_id.models.vae import load_vae, vae_fingerprint
from origin_id.models.weights import load_model, save_model
from training.detector_calibration import (
    calibrate_detector,
    calibrate_pixel_threshold,
    fit_copy_move_weight,
    localizer_conditions,
)
from training.detector_fitting import denoiser_beside, lare_maps, train_denoiser, train_detector, train_localizer
from training.detector_samples import (
    SCENE_SETS,
    SEEN_FILLS,
    SampleSource,
    training_photos,
)
from training.inpainting import UNSEEN_FILLS, set_fill_vae

BUNDLED_VAE = Path(__file__).resolve().parent.parent / "indexer" / "default_model" / "vae"


def widths_list(text: str) -> list[int]:
    """``--localizer-widths``: "32,48,96" -> [32, 48, 96]."""
    return [int(width) for width in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vae", default=str(BUNDLED_VAE), help="the VAE the service will serve the models with")
    p.add_argument("--out", type=Path, required=True, help="the run's directory (the models it trained)")
    p.add_argument("--work-dir", type=Path, default=Path(".data/detectors"), help="cached samples and denoisers")
    p.add_argument("--results", type=Path, default=Path("training/results"), help="loss curves (PNG)")
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
    p.add_argument("--detector-lr", type=float, default=0.0, help="peak detector LR (0 = --lr)")
    p.add_argument("--copy-move-floor", type=float, default=None,
                   help="copy-move scores up to this add nothing to the verdict (origin_id.detectors.detector."
                        "copy_move_evidence; default: the --init-detector's own, 0 for a new detector)")
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
                   help="comma-separated fills the samples use, some of the seen fills (default: all)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    return p


def lare_source(args, vae, train, tag: str):
    """The LaRE source of this run: a pretrained UNet, the denoiser beside ``--init-detector``
    (a fine-tune must read the maps its detector learned), or one trained on this run's
    samples (cached by the photos' tag)."""
    if args.lare_unet:
        return UNetLare.from_pretrained(args.lare_unet, float(vae.config.scaling_factor), args.lare_prompt)
    if (beside := denoiser_beside(args.init_detector)) is not None:
        print(f"LaRE maps: the latent denoiser beside {args.init_detector}")
        return beside
    path = args.work_dir / f"denoiser-{tag}.safetensors"
    if path.exists():
        return load_model(den.LatentDenoiser, den.DenoiserConfig, path, den.FORMAT)
    denoiser = train_denoiser(train, args, args.results)
    save_model(denoiser, path, den.FORMAT)
    return denoiser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.localizer_scenes and not any(getattr(args, f"{name}_samples") for name in SCENE_SETS):
        parser.error("--localizer-scenes needs scene samples: " + " or ".join(f"--{n}-samples" for n in SCENE_SETS))
    fills = [f for f in args.fills.split(",") if f]
    if not fills or set(fills) - set(SEEN_FILLS):
        parser.error(f"--fills must name some of {SEEN_FILLS} (held out: {UNSEEN_FILLS})")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.time()

    vae = load_vae(args.vae).eval()
    fingerprint = vae_fingerprint(vae)
    set_fill_vae(vae)
    train_photos, val_photos, photo_origin, tag = training_photos(args.photos, args.max_photos, fingerprint)
    print(f"photos: {photo_origin}, {len(train_photos)} train / {len(val_photos)} val")
    source = SampleSource(vae, args.work_dir, train_photos, val_photos, fills, tag, args.seed)
    train, val = source.photo_samples(args.train_samples, args.val_samples)

    denoiser = lare_source(args, vae, train, tag)
    # A pretrained UNet is worth a GPU when there is one (the maps are computed once per sample).
    denoiser.to(torch.device("cuda" if args.lare_unet and torch.cuda.is_available() else "cpu"))
    lare_train, lare_val = lare_maps(denoiser, train), lare_maps(denoiser, val)
    scene_train, scene_val = {}, {}
    for name in SCENE_SETS:
        if n := getattr(args, f"{name}_samples"):
            for split, n_split, into in (("train", n, scene_train),
                                         ("val", getattr(args, f"{name}_val_samples"), scene_val)):
                data = source.scene_samples(name, split, n_split)
                into[name] = (data, lare_maps(denoiser, data))

    detector = train_detector(train, val, lare_train, lare_val, args, args.results, fingerprint, scene_train,
                              denoiser.config.source if isinstance(denoiser, UNetLare) else "")
    detector.config.training["photos"] = {"source": photo_origin, "train": len(train_photos),
                                          "val": len(val_photos)}
    fit_copy_move_weight(detector, train, lare_train, seed=args.seed)
    calibrate_detector(detector, val, lare_val, scene_val)
    print("copy-move fusion:", json.dumps(detector.config.training["copy_move"]))
    print("detector calibration:", json.dumps(detector.config.calibration))
    if args.localizer_steps == 0:
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
    InpaintingAnalyzer(vae, denoiser.cpu(), detector, localizer).save(args.out)
    print(f"saved to {args.out} in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
