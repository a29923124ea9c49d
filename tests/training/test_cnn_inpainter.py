"""The training-only CNN inpainter: its fill, its serialization and its training script."""

import numpy as np
import pytest
import torch
from PIL import Image

from origin_id.models.weights import load_model, save_model
from training import train_inpainter
from training.cnn_inpainter import DEFAULT_WEIGHTS, FORMAT, CnnInpainter, CnnInpainterConfig
from training.data import photos_in_directory, photos_in_split, procedural_image, split_of
from training.inpainting import make_mask


def bundled() -> CnnInpainter:
    return load_model(CnnInpainter, CnnInpainterConfig, DEFAULT_WEIGHTS, FORMAT)


def hole_error(filled: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> float:
    return float(np.abs(filled[hole].astype(float) - truth[hole]).mean())


def test_the_bundled_inpainter_paints_the_hole_nearer_the_truth_than_flat_or_untrained_fills():
    """A learned fill, not noise: on a photo it never trained on (skimage's cat is in the test
    split) the painted pixels are nearer the original than the known pixels' mean colour or an
    untrained network's output."""
    import skimage.data

    photo = skimage.data.chelsea()
    assert split_of(Image.fromarray(photo)) == "test"
    hole = np.zeros(photo.shape[:2], bool)
    hole[120:180, 180:260] = True
    model = bundled()
    filled = model.fill(photo, hole)
    assert filled.shape == photo.shape and filled.dtype == np.uint8
    assert (filled[~hole] == photo[~hole]).all()  # pasted into the hole only, no feathering
    flat = photo.copy()
    flat[hole] = photo[~hole].mean(axis=0)
    torch.manual_seed(0)
    untrained = CnnInpainter(model.config).eval().fill(photo, hole)
    learned, mean_fill, noise = (hole_error(f, photo, hole) for f in (filled, flat, untrained))
    assert learned < 0.8 * mean_fill and learned < 0.5 * noise, (learned, mean_fill, noise)
    assert np.array_equal(model.fill(photo, hole), filled)  # deterministic: same sample, same fill


def test_the_inpainter_round_trips_with_its_config_and_refuses_mismatched_inputs(tmp_path):
    model = CnnInpainter(CnnInpainterConfig(width=24, dilations=(1, 2), work_side=64)).eval()
    save_model(model, tmp_path / "inpainter.safetensors", FORMAT)
    again = load_model(CnnInpainter, CnnInpainterConfig, tmp_path / "inpainter.safetensors", FORMAT)
    assert again.config.dilations == (1, 2) and again.config.work_side == 64
    image = np.asarray(procedural_image(3, size=96))
    hole = make_mask("ellipse", 96, 96, np.random.default_rng(0))
    assert np.array_equal(model.fill(image, hole), again.fill(image, hole))
    with pytest.raises(ValueError, match="HxWx3 image and an HxW mask"):
        model.fill(image, hole[:50])


def test_training_lowers_the_loss_and_writes_weights_curve_and_fill_sheet(tmp_path):
    out, results = tmp_path / "inpainter.safetensors", tmp_path / "results"
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(30, 36):
        procedural_image(seed, size=160).save(photos / f"scene{seed}.png")
    train_inpainter.main(["--photos", str(photos), "--out", str(out), "--results", str(results),
                          "--steps", "40", "--batch", "8", "--crops", "64", "--crop", "32", "--lr", "3e-3"])
    model = load_model(CnnInpainter, CnnInpainterConfig, out, FORMAT)
    training = model.config.training
    assert training["steps"] == 40
    assert training["train_photos"] == len(photos_in_split("train", photos_in_directory(photos))) > 0
    assert training["masks"] == ["rectangle", "ellipse", "brush", "border"]  # the held-out polygon stays out
    # The trained network fills far better than it did before its first step.
    crops = train_inpainter.crops_of([procedural_image(s, size=160) for s in range(30, 36)], 16, 32,
                                     np.random.default_rng(1))
    x, holes = train_inpainter.batch(crops, 16, np.random.default_rng(2))
    with torch.inference_mode():
        trained_loss = float(train_inpainter.inpainting_loss(model(x, holes), x, holes))
        torch.manual_seed(5)
        fresh_loss = float(train_inpainter.inpainting_loss(CnnInpainter(model.config)(x, holes), x, holes))
    assert trained_loss < 0.7 * fresh_loss, (trained_loss, fresh_loss)
    assert (results / "inpainter_loss.png").stat().st_size > 0
    assert Image.open(results / "inpainter_fills.jpg").size == (3 * 32, 6 * 32)
