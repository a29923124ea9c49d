"""The models, loaded once per process and shared.

A ``ModelBundle`` holds the VAE (used by the embedder and by the detectors)
and the ID2 transform, on one torch device. The server, the ingest pipeline
and the detectors all receive the same bundle instead of loading their own,
so a GPU process holds one copy of the weights.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from origin_id.detectors.analyzer import InpaintingAnalyzer
from origin_id.indexer.config import Settings
from origin_id.indexer.open_set import FILE_NAME, BackgroundSet
from origin_id.indexer.transform import LinearTransform
from origin_id.models import compute
from origin_id.models.vae import load_vae, vae_fingerprint

log = logging.getLogger(__name__)


def select_inpainting_dtype(requested: str) -> torch.dtype | None:
    """The autocast dtype of the inpainting analysis, None for plain float32.

    float32 is the default because it makes verdicts the same on every host: bfloat16
    (faster where the CPU multiplies it natively, AMX) rounds differently, and an image
    whose probability sits next to the threshold can be called the other way."""
    if requested == "float32":
        return None
    if requested == "bfloat16":
        return torch.bfloat16
    raise ValueError(f"inpainting_precision must be float32 or bfloat16, not {requested!r}")


def select_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA request without CUDA is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {requested!r} requested but only "
                               f"{torch.cuda.device_count()} CUDA device(s) exist")
    return device


@dataclass
class ModelBundle:
    vae: AutoencoderKL
    transform: LinearTransform
    device: torch.device
    version: str
    #: Serialises use of the models: CPU torch already uses every core per call,
    #: and one GPU stream gains nothing from interleaved small batches. (Once
    #: ``origin_id.models.compute`` is enabled the models run on one thread anyway.)
    lock: threading.Lock
    #: Inpainting detector + localizer on the same VAE; None when turned off or not installed.
    inpainting: InpaintingAnalyzer | None = None
    #: Open-set normalisation (``origin_id.indexer.open_set``); None = raw-score decisions.
    background: BackgroundSet | None = None

    @property
    def dim(self) -> int:
        return self.transform.config.rank

    @property
    def match_threshold(self) -> float:
        """What a match's score must reach: the margin over the query's background score
        when a background set is loaded, else the transform's raw-score threshold."""
        if self.background is not None:
            return float(self.background.match_margin)
        return float(self.transform.config.match_threshold)

    @classmethod
    def load(cls, settings: Settings) -> ModelBundle:
        """Load on the compute thread (``origin_id.models.compute``), where the models will run."""
        return compute.run(cls._load, settings)

    @classmethod
    def _load(cls, settings: Settings) -> ModelBundle:
        device = select_device(settings.device)
        vae_source = settings.vae or str(settings.model_dir / "vae")
        transform_path = Path(settings.transform or settings.model_dir / "transform.safetensors")
        vae = load_vae(vae_source).eval()
        transform = LinearTransform.load(transform_path)
        fingerprint = vae_fingerprint(vae)
        expected = transform.config.vae_fingerprint
        if expected and expected != fingerprint:
            raise ValueError(
                f"transform {transform_path} was trained on VAE {transform.config.vae_source!r} "
                f"(fingerprint {expected}), but the loaded VAE {vae_source!r} has fingerprint "
                f"{fingerprint}; pass the matching --vae / --transform pair")
        latent_dim = _latent_dim(vae)
        if latent_dim != transform.config.latent_dim:
            raise ValueError(f"VAE latent has {latent_dim} values at 256x256, "
                             f"transform expects {transform.config.latent_dim}")
        # The weights alone name the model: recalibrating the threshold (file metadata)
        # must not make every stored embedding look stale.
        version = "id2-" + hashlib.sha256((fingerprint + vae_fingerprint(transform)).encode()).hexdigest()[:12]
        vae.requires_grad_(False)
        transform.requires_grad_(False)
        log.info("models loaded: VAE %s, transform %s (rank %d), device %s, version %s",
                 vae_source, transform_path, transform.config.rank, device, version)
        # Channels-last convolutions take oneDNN's faster path on CPU;
        # the weights' values, and so the fingerprint, do not change.
        vae, lock = vae.to(device, memory_format=torch.channels_last), threading.Lock()
        inpainting = None
        if settings.inpainting:
            directory = Path(settings.detectors or settings.model_dir / "inpainting")
            if settings.detectors or directory.is_dir():
                dtype = select_inpainting_dtype(settings.inpainting_precision)
                inpainting = InpaintingAnalyzer.load(directory, vae, device, lock, vae_fingerprint=fingerprint,
                                                     autocast_dtype=dtype)
                log.info("inpainting models loaded from %s (threshold %.3f, %s)", directory, inpainting.threshold,
                         inpainting.precision)
            else:
                log.warning("no inpainting models in %s: verdicts will say available=false", directory)
        return cls(vae=vae, transform=transform.to(device), device=device, version=version, lock=lock,
                   inpainting=inpainting, background=_load_background(settings, version))


def background_path(settings: Settings) -> Path | None:
    """The background set file settings name, or the model directory's when the bundled
    weights are served; None for none."""
    if settings.background.lower() == "none":
        return None
    path = Path(settings.background) if settings.background else settings.model_dir / FILE_NAME
    if not settings.background and (settings.vae or settings.transform or not path.is_file()):
        return None  # the bundled set belongs to the bundled weights only
    return path


def _load_background(settings: Settings, version: str) -> BackgroundSet | None:
    """The background set of ``background_path``; one made for other weights is refused."""
    path = background_path(settings)
    if path is None:
        return None
    background = BackgroundSet.load(path)
    if background.model_version != version:
        raise ValueError(f"background set {path} was made for model {background.model_version}, "
                         f"not the loaded {version}: rebuild it (training.calibrate_open_set) or pass "
                         "--background none")
    log.info("background set loaded from %s: %d vectors, k=%d, match margin %.3f", path,
             len(background.vectors), background.k, background.match_margin)
    return background


def _latent_dim(vae: AutoencoderKL) -> int:
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    side = 256 // factor
    return int(vae.config.latent_channels) * side * side

