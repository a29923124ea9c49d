"""Calibration of the detector's verdict: each negative group held to its false-positive target."""

import json

import numpy as np
import torch

from origin_id.detectors import detector as det
from training.detector_calibration import calibrate_detector, detector_outputs


def _spread_detector_and_val(n: int = 300, seed: int = 0):
    """An untrained detector whose logits are centred and spread, and a val set of pristine,
    globally edited (a different residual scale, so their scores differ) and inpainted samples."""
    torch.manual_seed(seed)
    model = det.InpaintingDetector(det.DetectorConfig()).eval()
    val, lare = _fake_samples(n, seed, edited=slice(n // 3, 2 * n // 3), inpainted=slice(2 * n // 3, n))
    # An untrained head scores everything within 1e-4 of one value: centre and spread its logits.
    p0 = detector_outputs(model, val, lare)
    centre = float(np.log(p0 / (1 - p0)).mean())
    with torch.no_grad():
        head = model.image_head[-1]
        head.weight.mul_(1e4)
        head.bias.sub_(centre).mul_(1e4)
    return model, val, lare


def _fake_samples(n: int, seed: int, edited: slice, inpainted: slice, scale: float = 0.3):
    rng = np.random.default_rng(seed)
    edits = np.array([""] * n, object)
    edits[edited] = "tone"
    x = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    x[edited] = (x[edited] * scale).astype(np.uint8)
    label = np.zeros(n, bool)
    label[inpainted] = True
    data = {"x": x, "error": rng.random((n, 3, 32, 32)).astype(np.float16),
            "mask": np.zeros((n, 32, 32), bool), "label": label,
            "meta": np.array([json.dumps({"global_edit": e}) for e in edits])}
    return data, rng.random((n, 4, 4, 4)).astype(np.float16)


def test_detector_threshold_holds_false_positives_on_each_negative_group():
    model, val, lare = _spread_detector_and_val()
    calibrate_detector(model, val, lare)
    probs = detector_outputs(model, val, lare)
    t = model.config.threshold
    edited = np.array([bool(json.loads(m)["global_edit"]) for m in val["meta"]])
    for group in (~val["label"] & ~edited, ~val["label"] & edited):
        assert (probs[group] >= t).mean() <= 0.04  # 96th percentile of each group (pooled: 0.06 here)
    assert model.config.localize_threshold <= t
    assert set(model.config.calibration["val_fpr"]) == {"pristine", "globally edited"}


def test_graphics_negatives_are_a_calibration_group_of_their_own():
    model, val, lare = _spread_detector_and_val()
    calibrate_detector(model, val, lare)
    photo_threshold = model.config.threshold
    # Graphics that look painted to this detector: clean copies of the val negatives it scores
    # highest (about 20% of them flagged at the photo threshold), then the val positives.
    probs = detector_outputs(model, val, lare)
    negatives = np.nonzero(~val["label"])[0]
    high = negatives[probs[negatives] >= np.quantile(probs[negatives], 0.8)]
    idx = np.concatenate([np.resize(high, 100), np.nonzero(val["label"])[0]])
    graphics = {k: v[idx] for k, v in val.items()}
    graphics["meta"] = np.array([json.dumps({"global_edit": ""})] * len(idx))
    lare_graphics = lare[idx]
    assert (detector_outputs(model, graphics, lare_graphics)[:100] >= photo_threshold).mean() > 0.1
    calibrate_detector(model, val, lare, {"graphics": (graphics, lare_graphics)})
    t = model.config.threshold
    assert t > photo_threshold
    assert (detector_outputs(model, graphics, lare_graphics)[:100] >= t).mean() <= 0.05
    calibration = model.config.calibration
    assert set(calibration["val_fpr"]) == {"pristine", "globally edited", "graphics"}
    assert calibration["val_fpr"]["graphics"] <= 0.05
    assert "graphics val set, 100 clean and 100 inpainted" in calibration["data"]
    assert 0.0 <= calibration["graphics_val_auc"] <= 1.0
