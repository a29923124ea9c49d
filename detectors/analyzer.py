"""``InpaintingAnalyzer``: one query image -> an inpainting verdict and, when warranted, a mask.

Data flow for a query (the models on the bundle's device, on the compute thread of
``origin_id.models.compute``, under the bundle's lock):

1. ``x``: the query resized to 256x256 in [-1, 1], exactly as the embedder
   sees it; the embedder's view and VAE latent are reused when given, so the
   resize and the encoder run once per query for both jobs;
2. pixel reconstruction error ``|x - D(z)|`` and the LaRE map of the latent
   denoiser (or of a pretrained diffusion UNet, ``origin_id.detectors.unet_lare``);
3. ``InpaintingDetector.verdict`` on the query and on its mirror image (one
   batch), and ``CopyMoveSearch`` on the query ->
   probability (the logits averaged, plus the weighted copy-move score),
   compared with the calibrated threshold stored in the detector's checkpoint;
4. when the probability is at least ``localize_threshold`` (the detector is not
   confident the image is clean), ``MaskDiffusionLocalizer`` samples the mask
   for both views in one batch (5 DDIM steps each, the 10 x0 predictions averaged, fixed
   seed), averages them (the mirror's flipped back) and cuts it at the
   query's size (``origin_id.detectors.query_mask``).

Checkpoints live in one directory: ``detector.safetensors``,
``localizer.safetensors`` and the LaRE source the detector was trained with:
``denoiser.safetensors`` (the project's ``LatentDenoiser``) or
``lare_unet.safetensors`` (``UNetLare``: a pretrained UNet, loaded from the source
that file names).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from origin_id.detectors import denoiser as den
from origin_id.detectors import detector as det
from origin_id.detectors import localizer as loc
from origin_id.detectors.copy_move import CopyMoveSearch
from origin_id.detectors.query_mask import QueryMask
from origin_id.detectors.unet_lare import UNetLare
from origin_id.models import compute
from origin_id.models.vae import preprocess
from origin_id.models.weights import load_model, save_model

FILES = {"denoiser": "denoiser.safetensors", "detector": "detector.safetensors",
         "localizer": "localizer.safetensors"}
#: Stands in for ``denoiser.safetensors`` when the LaRE map comes from a pretrained UNet.
UNET_LARE_FILE = "lare_unet.safetensors"
#: Either LaRE source: both have ``lare(latents, seed)`` and ``config.latent_channels``.
LareSource = den.LatentDenoiser | UNetLare


@dataclass
class InpaintingResult:
    probability: float
    inpainted: bool
    threshold: float
    localized: bool
    #: The localized region at the query's size when localized, else None.
    region: QueryMask | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """bool (height, width) at the query's size when localized, else None (drawn on first use)."""
        return self.region.array if self.region is not None else None

    @property
    def area_fraction(self) -> float:
        return self.region.area_fraction if self.region is not None else 0.0

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """(x, y, width, height) of the marked pixels, None when none are marked."""
        return self.region.bbox if self.region is not None else None

    def mask_png(self) -> bytes:
        """8-bit grayscale PNG at the query's size, 255 = inpainted; b"" when not localized."""
        return self.region.png() if self.region is not None else b""


class InpaintingAnalyzer:
    def __init__(self, vae: torch.nn.Module, denoiser: LareSource, detector: det.InpaintingDetector,
                 localizer: loc.MaskDiffusionLocalizer, device: torch.device | str = "cpu",
                 lock: threading.Lock | None = None, seed: int = 0, autocast_dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        # None = float32; bfloat16 where the CPU has matrix units for it (indexer.model_bundle).
        self.autocast_dtype = autocast_dtype
        self.vae = vae
        # Channels-last: oneDNN's faster path for these convolutions on CPU.
        self.denoiser, self.detector, self.localizer = (
            m.to(self.device, memory_format=torch.channels_last).eval().requires_grad_(False)
            for m in (denoiser, detector, localizer))
        self.lock = lock or threading.Lock()
        self.seed = seed
        self.copy_move = CopyMoveSearch()

    @property
    def threshold(self) -> float:
        return float(self.detector.config.threshold)

    @property
    def precision(self) -> str:
        return "float32" if self.autocast_dtype is None else str(self.autocast_dtype).removeprefix("torch.")

    @property
    def localize_threshold(self) -> float:
        return float(self.detector.config.localize_threshold)

    # -- checkpoints --------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | Path, vae: torch.nn.Module, device: torch.device | str = "cpu",
             lock: threading.Lock | None = None, vae_fingerprint: str = "",
             autocast_dtype: torch.dtype | None = None) -> InpaintingAnalyzer:
        directory = Path(directory)
        device = torch.device(device)
        missing = [FILES[k] for k in ("detector", "localizer") if not (directory / FILES[k]).is_file()]
        if missing:
            raise FileNotFoundError(f"inpainting models incomplete in {directory}: missing {missing}")
        detector = load_model(det.InpaintingDetector, det.DetectorConfig, directory / FILES["detector"],
                              det.FORMAT)
        localizer = load_model(loc.MaskDiffusionLocalizer, loc.LocalizerConfig, directory / FILES["localizer"],
                               loc.FORMAT)
        expected = detector.config.vae_fingerprint
        if vae_fingerprint and expected and expected != vae_fingerprint:
            raise ValueError(f"inpainting models in {directory} were trained on VAE fingerprint {expected}, "
                             f"but the loaded VAE has {vae_fingerprint}; pass the matching --detectors")
        lare = load_lare_source(directory, device)
        if bool(detector.config.lare_source) != isinstance(lare, UNetLare):
            trained = detector.config.lare_source or "the project's latent denoiser"
            raise ValueError(f"the detector in {directory} was trained on LaRE maps of {trained}, "
                             f"but the directory holds {type(lare).__name__}")
        return cls(vae, lare, detector, localizer, device, lock, autocast_dtype=autocast_dtype)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        save_lare_source(self.denoiser, directory)
        save_model(self.detector, directory / FILES["detector"], det.FORMAT)
        save_model(self.localizer, directory / FILES["localizer"], loc.FORMAT)

    # -- inference ----------------------------------------------------------------

    @torch.inference_mode()
    def error_maps(self, x: torch.Tensor, latents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel reconstruction error (N,3,256,256) and LaRE map (N,4,32,32) of a preprocessed batch."""
        x = x.to(self.device)
        if latents is None:
            latents = self.vae.encode(x).latent_dist.mean
        latents = latents.reshape(len(x), self.denoiser.config.latent_channels, x.shape[-2] // 8,
                                  x.shape[-1] // 8).to(self.device)
        recon = self.vae.decode(latents).sample.clamp(-1, 1)
        return (x - recon).abs(), self.denoiser.lare(latents, seed=self.seed)

    def analyze(self, images: Sequence[Image.Image], latents: torch.Tensor | None = None,
                localize: bool | None = None, inputs: torch.Tensor | None = None,
                sizes: Sequence[tuple[int, int]] | None = None) -> list[InpaintingResult]:
        """Verdicts for RGB images. ``latents`` / ``inputs``: the embedder's latents and
        ``preprocess``-ed batch of the same images, if at hand (not recomputed then).
        ``localize``: None = only when not confidently clean; True/False = always/never.
        ``sizes``: (width, height) to draw each mask at, when an image was decoded at a
        reduced scale (``origin_id.indexer.decode``); by default each image's own size."""
        if not images:
            return []
        x = inputs if inputs is not None else preprocess(images)
        probs, maps = compute.run(self._infer, x, latents, localize)
        results = []
        for i, (im, p) in enumerate(zip(images, probs)):
            region = None
            if i in maps:
                size = tuple(sizes[i]) if sizes is not None else im.size
                region = QueryMask.from_probability(maps[i], size, self.localizer.config.pixel_threshold)
            results.append(InpaintingResult(float(p), bool(p >= self.threshold), self.threshold, i in maps,
                                            region))
        return results

    @torch.inference_mode()
    def _infer(self, x: torch.Tensor, latents: torch.Tensor | None,
               localize: bool | None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The models' part of ``analyze`` (on the compute thread): probabilities, and the
        mask probability maps (64 x 64) of the images localized, by index."""
        x = x.to(self.device)
        with self.lock, torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                       enabled=self.autocast_dtype is not None):
            pixel_error, lare = self.error_maps(x, latents)
            copy_move = None
            if self.detector.config.copy_move_weight:
                with torch.autocast(self.device.type, enabled=False):  # a float32 search either way
                    copy_move = torch.tensor([e.score for e in self.copy_move(x)], device=self.device)
            logit, out, mirrored = self.detector.verdict(x, pixel_error, lare, copy_move)
            probs = torch.sigmoid(logit).float().cpu().numpy()
            todo = [i for i, p in enumerate(probs)
                    if localize or (localize is None and p >= self.localize_threshold)]
            maps = {}
            if todo:
                cond = loc.localizer_condition(out.features[todo], out.mask_logit[todo], pixel_error[todo])
                mirrored_cond = loc.localizer_condition(mirrored.features[todo], mirrored.mask_logit[todo],
                                                        pixel_error[todo].flip(-1))
                sampled = self.localizer.sample_mirrored(cond, mirrored_cond, seed=self.seed).float().cpu().numpy()
                maps = {i: sampled[k, 0] for k, i in enumerate(todo)}
        return probs, maps


def load_lare_source(directory: Path, device: torch.device) -> LareSource:
    """The one LaRE source a detectors directory holds (a pretrained UNet runs in half
    precision on a GPU)."""
    has_denoiser, has_unet = (directory / FILES["denoiser"]).is_file(), (directory / UNET_LARE_FILE).is_file()
    if has_denoiser == has_unet:
        raise FileNotFoundError(f"{directory} must hold exactly one LaRE source, {FILES['denoiser']} or "
                                f"{UNET_LARE_FILE}; it holds {'both' if has_denoiser else 'neither'}")
    if has_unet:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        return UNetLare.load(directory / UNET_LARE_FILE, dtype=dtype)
    return load_model(den.LatentDenoiser, den.DenoiserConfig, directory / FILES["denoiser"], den.FORMAT)


def save_lare_source(model: LareSource, directory: Path) -> None:
    """Write ``model`` as its directory file, removing the other kind's (one source per directory)."""
    if isinstance(model, UNetLare):
        model.save(directory / UNET_LARE_FILE)
        (directory / FILES["denoiser"]).unlink(missing_ok=True)
    else:
        save_model(model, directory / FILES["denoiser"], den.FORMAT)
        (directory / UNET_LARE_FILE).unlink(missing_ok=True)
