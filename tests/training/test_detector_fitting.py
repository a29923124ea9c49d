"""Where fitting starts: new models, or saved ones of the same VAE and condition to fine-tune."""

import argparse

import pytest
import torch

from origin_id.detectors import detector as det
from origin_id.detectors import localizer as loc
from origin_id.models.weights import save_model
from training.detector_fitting import initial_detector, initial_localizer


def _detector_args(**options) -> argparse.Namespace:
    """``train_detectors``' options that ``initial_detector`` reads, at their defaults."""
    return argparse.Namespace(**{"init_detector": None, "copy_move_floor": None, **options})


def test_fine_tuning_starts_from_a_detector_of_the_same_vae(tmp_path):
    saved = det.InpaintingDetector(det.DetectorConfig(vae_fingerprint="abc", threshold=0.7))
    path = tmp_path / "detector.safetensors"
    save_model(saved, path, det.FORMAT)
    args = _detector_args(init_detector=path)
    model = initial_detector(args, "abc")
    assert model.config.threshold == 0.7
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))
    with pytest.raises(ValueError, match="trained on VAE abc"):
        initial_detector(args, "other")
    fresh = initial_detector(_detector_args(), "xyz")
    assert fresh.config.vae_fingerprint == "xyz" and fresh.config.lare_source == ""
    # --copy-move-floor sets the floor of the copy-move term; without it a saved detector keeps its own.
    floored = initial_detector(_detector_args(init_detector=path, copy_move_floor=0.002), "abc")
    assert floored.config.copy_move_floor == 0.002 and floored.config.threshold == 0.7
    save_model(floored, path, det.FORMAT)
    assert initial_detector(args, "abc").config.copy_move_floor == 0.002
    assert model.config.copy_move_floor == 0.0 and fresh.config.copy_move_floor == 0.0
    assert initial_detector(_detector_args(copy_move_floor=0.002), "xyz").config.copy_move_floor == 0.002
    # Nor across LaRE sources: maps of a pretrained UNet read differently from the denoiser's.
    with pytest.raises(ValueError, match="LaRE maps of the latent denoiser"):
        initial_detector(args, "abc", lare_source="stabilityai/stable-diffusion-2")


def test_localizer_fine_tuning_starts_from_a_localizer_of_the_same_condition(tmp_path):
    saved = loc.MaskDiffusionLocalizer(loc.LocalizerConfig(cond_channels=12, pixel_threshold=0.45))
    path = tmp_path / "localizer.safetensors"
    save_model(saved, path, loc.FORMAT)
    args = argparse.Namespace(init_localizer=path, localizer_widths=None)
    model = initial_localizer(args, 12)
    assert model.config.pixel_threshold == 0.45
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))
    with pytest.raises(ValueError, match="takes 12 condition channels, this detector gives 9"):
        initial_localizer(args, 9)
    new = initial_localizer(argparse.Namespace(init_localizer=None, localizer_widths=None), 9)
    assert new.config.cond_channels == 9
    # --localizer-widths: a new localizer of those widths, or the saved one narrowed to them.
    fresh = initial_localizer(argparse.Namespace(init_localizer=None, localizer_widths=[32, 48, 96]), 9)
    assert fresh.config.widths == [32, 48, 96] and fresh.config.time_width == 0
    narrow = initial_localizer(argparse.Namespace(init_localizer=path, localizer_widths=[32, 48, 96]), 12)
    assert narrow.config.widths == [32, 48, 96] and narrow.config.pixel_threshold == 0.45
    assert narrow.config.training["narrowed_from"] == [48, 64, 96]
    assert all(p.requires_grad for p in narrow.parameters())
