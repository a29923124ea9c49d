"""Training helpers that decide what data a model sees: splits, augmentation and calibration."""

import argparse
import copy
import json

import numpy as np
import pytest
import torch

from detectors import detector as det
from detectors import localizer as loc
from detectors.denoiser import FORMAT as DENOISER_FORMAT
from detectors.denoiser import DenoiserConfig, LatentDenoiser
from detectors.weights import load_model, save_model
from training.calibrate_transform import threshold_for_precision
from training.cnn_inpainter import DEFAULT_WEIGHTS, weights_digest
from training.data import SPLITS, procedural_image, split_of
from training.edits import FAMILIES, apply
from training.train_detectors import (
    TRAIN_CROP,
    batch_tensors,
    calibrate_detector,
    detector_outputs,
    initial_detector,
    initial_localizer,
    load_train_chunks,
)


def test_photo_split_is_stable_and_covers_all_splits():
    ims = [procedural_image(i, size=64) for i in range(60)]
    first = [split_of(im) for im in ims]
    assert first == [split_of(im.copy()) for im in ims]
    assert set(first) == set(SPLITS)


def test_threshold_reaches_the_target_precision():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.8, 0.1, 900), rng.normal(0.4, 0.1, 300)])
    truth = np.concatenate([np.ones(900, bool), np.zeros(300, bool)])
    report = threshold_for_precision(scores, truth, 0.95)
    declared = scores >= report["threshold"]
    assert (declared & truth).sum() / declared.sum() >= 0.95
    # The lowest such threshold: one step lower and precision would fall under target (or nothing changes).
    lower = scores[scores < report["threshold"]].max()
    below = scores >= lower
    assert (below & truth).sum() / below.sum() < 0.95 or below.sum() == declared.sum() + 1
    assert report["recall_at_threshold"] > 0.8
    assert report["decision_accuracy"] == (declared == truth).mean()


def test_every_edit_family_is_deterministic_per_seed():
    im = procedural_image(7, size=160)
    for name in FAMILIES:
        a, b = apply(name, im, seed=3), apply(name, im, seed=3)
        assert np.array_equal(np.asarray(a), np.asarray(b)), name


def _painted_views(n: int, rows: slice, cols: slice):
    """``n`` 256 px samples whose only non-zero pixels (image, error and latent-grid LaRE map
    alike) are one painted rectangle: each map shows where a transform or crop put it."""
    masks = np.zeros((n, 256, 256), bool)
    masks[:, rows, cols] = True
    x = np.where(masks[..., None], 255, 0).astype(np.uint8).repeat(3, -1)
    data = {"x": x, "error": (masks[:, None] * np.ones((1, 3, 1, 1))).astype(np.float16), "mask": masks,
            "label": np.ones(n, bool)}
    return data, np.repeat(masks[:, None, ::8, ::8], 4, 1).astype(np.float16)


def test_detector_augmentation_moves_every_map_together_and_relabels_cut_regions():
    n = 64
    data, lare = _painted_views(n, slice(8, 40), slice(8, 40))  # near one corner: some crops miss it
    rng = np.random.default_rng(0)
    labels = []
    for i in range(n):
        xi, err, lr, mask, y = batch_tensors(data, np.array([i]), lare, rng)
        assert xi.shape[-2:] == mask.shape[-2:] == err.shape[-2:] == (TRAIN_CROP, TRAIN_CROP)
        assert lr.shape[-2:] == (TRAIN_CROP // 8, TRAIN_CROP // 8)
        assert torch.equal(xi[0, 0] > 0, mask[0, 0] > 0) and torch.equal(err[0, 0] > 0, mask[0, 0] > 0)
        # The latent-grid map stays aligned with the pixels (crops are whole latent cells).
        assert torch.equal(lr[0, 0] > 0, mask[0, 0, ::8, ::8] > 0)
        assert float(y) == float(mask.sum() >= 16)
        labels.append(float(y))
    assert 0 < sum(labels) < n  # some crops keep the square, some cut it out


def test_a_whole_view_crop_keeps_every_painted_pixel_under_the_dihedral_transforms():
    """``crop=256`` (``--train-crop 256``): the whole view, so no sample loses its label, and
    the maps still turn and mirror together."""
    data, lare = _painted_views(1, slice(8, 40), slice(8, 40))  # the corner square a 192 px crop can cut out
    rng = np.random.default_rng(0)
    corners = set()
    for _ in range(16):
        xi, err, lr, mask, y = batch_tensors(data, np.array([0]), lare, rng, crop=256)
        assert xi.shape[-2:] == err.shape[-2:] == mask.shape[-2:] == (256, 256) and lr.shape[-2:] == (32, 32)
        assert float(y) == 1.0 and float(mask.sum()) == 32 * 32
        assert torch.equal(xi[0, 0] > 0, mask[0, 0] > 0) and torch.equal(lr[0, 0] > 0, mask[0, 0, ::8, ::8] > 0)
        corners.add(tuple(map(int, mask[0, 0].nonzero()[0])))
    assert len(corners) > 1


def test_scaled_batches_show_the_whole_view_taken_down_as_the_scale_view_reads_it():
    """``scaled``: no crop; image, error and mask taken down to ``TRAIN_CROP`` by area (the
    mask cut at half), the LaRE map whole, every map under the same dihedral transform."""
    # Away from the centre and not symmetric: a transform moves it.
    data, lare = _painted_views(1, slice(8, 72), slice(16, 48))
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(16):
        xi, err, lr, mask, y = batch_tensors(data, np.array([0]), lare, rng, scaled=True)
        assert xi.shape[-2:] == err.shape[-2:] == mask.shape[-2:] == (TRAIN_CROP, TRAIN_CROP)
        assert lr.shape[-2:] == (32, 32) and float(y) == 1.0
        # The whole painted region survives, at (192/256)^2 of its area.
        assert float(mask.sum()) == pytest.approx(64 * 32 * (TRAIN_CROP / 256) ** 2, rel=0.05)
        assert torch.equal(mask[0, 0] > 0, xi[0, 0] > 0)
        # The LaRE map stays aligned with the pixels: taken down to it, the mask is the map.
        small = torch.nn.functional.interpolate(mask, size=(32, 32), mode="area")[0, 0] >= 0.5
        assert torch.equal(small, lr[0, 0] > 0)
        seen.add(tuple(map(int, mask[0, 0].nonzero()[0])))
    assert len(seen) > 1  # the dihedral transforms still apply


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


def _detector_args(**options) -> argparse.Namespace:
    """``train_detectors``' options that ``initial_detector`` reads, at their defaults."""
    return argparse.Namespace(**{"init_detector": None, "trace_bands": 0, "scale_view": None,
                                 "copy_move_floor": None, **options})


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
    assert fresh.config.vae_fingerprint == "xyz" and fresh.config.lare_source == "" and fresh.config.trace_bands == 1
    # --trace-bands widens the saved detector; the fine-tune starts from its function.
    wider = initial_detector(_detector_args(init_detector=path, trace_bands=2), "abc")
    assert wider.config.trace_bands == 2 and wider.config.threshold == 0.7
    assert all(p.requires_grad for p in wider.parameters())
    inputs = (torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 3, 64, 64), torch.rand(1, 4, 8, 8))
    with torch.no_grad():
        assert torch.allclose(wider.eval()(*inputs).logit, saved.eval()(*inputs).logit, atol=1e-6)
    # --scale-view adds a reduced view to the verdict of the same weights.
    scaled = initial_detector(_detector_args(init_detector=path, scale_view=32), "abc")
    assert scaled.config.scale_view == 32 and scaled.config.threshold == 0.7
    assert all(torch.equal(a, b) for a, b in zip(scaled.state_dict().values(), saved.state_dict().values()))
    assert initial_detector(_detector_args(scale_view=48), "xyz").config.scale_view == 48
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


def test_training_samples_come_from_cached_chunks_with_their_own_seeds(tmp_path):
    """Chunks are built once (seed + 1000 k), reused on the next run, and joined in order,
    including metadata strings longer in a later chunk than in the first."""
    calls = []

    def build(n, seed):
        calls.append((n, seed))
        return {"x": np.full((n, 2), seed, np.int32), "meta": np.asarray(["m" * (1 + seed // 1000)] * n)}

    data = load_train_chunks(tmp_path, "tag", 5, 3, build, chunk_samples=2)
    assert calls == [(2, 3), (2, 1003), (1, 2003)]
    assert data["x"][:, 0].tolist() == [3, 3, 1003, 1003, 2003]
    assert data["meta"].tolist() == ["m", "m", "mm", "mm", "mmm"]
    again = load_train_chunks(tmp_path, "tag", 5, 3, build, chunk_samples=2)
    assert len(calls) == 3  # every chunk came from the cache
    assert all(np.array_equal(data[k], again[k]) for k in data)


def test_detectors_train_on_a_directory_of_ones_own_photos(tmp_path, bundle, capsys):
    """``--photos DIR``: the directory's train and val splits feed training and calibration,
    its samples are cached under a name of their own, and the result serves."""
    from detectors.analyzer import InpaintingAnalyzer
    from training import train_detectors
    from training.data import photo_set_digest, photos_in_directory, photos_in_split

    photos = tmp_path / "archive"
    photos.mkdir()
    for seed in range(30, 39):  # 6 train, 1 val, 1 test and 1 flat (dropped) scene
        procedural_image(seed, size=288).save(photos / f"scene{seed}.png")
    usable = photos_in_directory(photos)
    train_photos, val_photos = photos_in_split("train", usable), photos_in_split("val", usable)
    n_train, n_val = len(train_photos), len(val_photos)
    assert (n_train, n_val, len(usable)) == (6, 1, 8)
    assert len(photos_in_directory(photos, limit=3)) <= 3

    out, work = tmp_path / "inpainting", tmp_path / "work"
    train_detectors.main([
        "--photos", str(photos), "--out", str(out), "--work-dir", str(work), "--results", str(tmp_path / "res"),
        "--train-samples", "32", "--val-samples", "16", "--denoiser-steps", "2", "--detector-steps", "2",
        "--localizer-steps", "2", "--eval-every", "2", "--batch", "8",
        "--graphics-samples", "8", "--graphics-val-samples", "4", "--grain-samples", "8", "--grain-val-samples", "4",
        "--cnn-samples", "8", "--cnn-val-samples", "4", "--localizer-scenes", "--localizer-widths", "32,48,96",
    ])
    analyzer = InpaintingAnalyzer.load(out, bundle.vae, vae_fingerprint=bundle.transform.config.vae_fingerprint)
    assert analyzer.detector.config.training["photos"] == {"source": str(photos.resolve()), "train": n_train,
                                                            "val": n_val}
    # Cached under a name of their own: the VAE fingerprint plus a digest of the photos.
    tag = f"{bundle.transform.config.vae_fingerprint[:8]}-{photo_set_digest(train_photos + val_photos)}"
    # The CNN-fill set's name also carries its inpainter's weights.
    cnn_tag = f"{tag}-{weights_digest(DEFAULT_WEIGHTS)}"
    assert sorted(p.name for p in work.iterdir()) == [
        f"cnn-train-{cnn_tag}-8-s40.npz", f"cnn-val-{cnn_tag}-4-s41.npz",
        f"denoiser-{tag}.safetensors", f"grain-train-{tag}-8-s8.npz", f"grain-val-{tag}-4-s9.npz",
        f"graphics-train-{tag}-8-s5.npz", f"graphics-val-{tag}-4-s6.npz", f"train-{tag}-32-s0.npz",
        f"val-{tag}-16.npz"]
    # The CNN-fill set: the directory's own photos (train and val split), painted with that fill only.
    for split, n, seed in (("train", 8, 40), ("val", 4, 41)):
        with np.load(work / f"cnn-{split}-{cnn_tag}-{n}-s{seed}.npz") as cnn:
            fills = {json.loads(m)["fill"] for m, painted in zip(cnn["meta"], cnn["label"]) if painted}
            assert fills == {"cnn"} and cnn["label"].sum() == len(cnn["label"]) // 2
    # Each extra sample set gives its share of every batch and is a calibration group of its own.
    training = analyzer.detector.config.training
    assert (training["graphics_per_batch"], training["grain_per_batch"], training["cnn_per_batch"]) == (2, 2, 1)
    assert set(analyzer.detector.config.calibration["val_fpr"]) == {"pristine", "globally edited", "graphics",
                                                                     "grain", "cnn"}
    # --localizer-scenes: the localizer's batches mix them in at the same shares.
    localizer_training = analyzer.localizer.config.training
    assert (localizer_training["graphics_per_batch"], localizer_training["grain_per_batch"],
            localizer_training["cnn_per_batch"]) == (2, 2, 1)
    assert (localizer_training["graphics_samples"], localizer_training["grain_samples"]) == (8, 8)
    assert analyzer.localizer.config.widths == [32, 48, 96]  # a new localizer of those widths
    image = procedural_image(77, size=200)
    result = analyzer.analyze([image], localize=True)[0]
    assert 0.0 <= result.probability <= 1.0 and result.mask.shape == (200, 200)

    # A fine-tune reads the LaRE maps of the denoiser beside its --init-detector, not a
    # denoiser of its own (here the cached one is gone, and 3 steps would make another).
    (work / f"denoiser-{tag}.safetensors").unlink()
    refit = tmp_path / "refit"
    train_detectors.main([
        "--photos", str(photos), "--out", str(refit), "--work-dir", str(work), "--results", str(tmp_path / "res"),
        "--train-samples", "32", "--val-samples", "16", "--denoiser-steps", "3", "--detector-steps", "0",
        "--localizer-steps", "0", "--init-detector", str(out / "detector.safetensors")])
    first, second = (load_model(LatentDenoiser, DenoiserConfig, d / "denoiser.safetensors", DENOISER_FORMAT)
                     for d in (out, refit))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not (work / f"denoiser-{tag}.safetensors").exists()

    too_few = tmp_path / "two-photos"
    too_few.mkdir()
    for seed in (30, 31):  # both in the train split
        procedural_image(seed, size=288).save(too_few / f"scene{seed}.png")
    with pytest.raises(SystemExit, match="2 usable photos split into 2 train and 0 val"):
        train_detectors.main(["--photos", str(too_few), "--work-dir", str(work), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    # Scene sets in the localizer's batches need scene samples: refused before any work.
    with pytest.raises(SystemExit):
        train_detectors.main(["--photos", str(photos), "--work-dir", str(tmp_path / "w2"), "--out",
                              str(tmp_path / "y"), "--localizer-scenes"])
    assert "--localizer-scenes needs scene samples" in capsys.readouterr().err
    assert not (tmp_path / "w2").exists() and not (tmp_path / "y").exists()
    # A training crop the detector cannot take (off its 16 px stride, or past the view): refused too.
    for crop in ("200", "272"):
        with pytest.raises(SystemExit):
            train_detectors.main(["--photos", str(photos), "--work-dir", str(tmp_path / "w3"), "--out",
                                  str(tmp_path / "z"), "--train-crop", crop])
        assert f"--train-crop must be a multiple of 16 from 16 to 256 (the view), got {crop}" in capsys.readouterr().err
    assert not (tmp_path / "w3").exists() and not (tmp_path / "z").exists()


def test_lare_map_is_the_served_lare_map_with_gradients():
    torch.manual_seed(0)
    denoiser = LatentDenoiser(DenoiserConfig(width=16, blocks=1)).eval()
    z = torch.randn(3, 4, 8, 8)
    with_grad = denoiser.lare_map(z, seed=5)
    assert torch.allclose(with_grad.detach(), denoiser.lare(z, seed=5))
    with_grad.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in denoiser.inp.parameters())


def test_joint_training_moves_the_denoiser_and_saves_the_one_it_calibrated_with(tmp_path, bundle, capsys):
    """``--joint-denoiser-lr``: End4's joint fine-tune. The denoiser saved beside the detector
    is the trained one, and the verdict's calibration was read from its maps."""
    from detectors.analyzer import InpaintingAnalyzer
    from training import train_detectors

    photos = tmp_path / "archive"
    photos.mkdir()
    for seed in range(30, 39):
        procedural_image(seed, size=288).save(photos / f"scene{seed}.png")
    common = ["--photos", str(photos), "--work-dir", str(tmp_path / "work"), "--results", str(tmp_path / "res"),
              "--train-samples", "24", "--val-samples", "12", "--denoiser-steps", "2", "--batch", "6",
              "--eval-every", "2"]
    first = tmp_path / "first"
    train_detectors.main([*common, "--out", str(first), "--detector-steps", "2", "--localizer-steps", "0"])
    joint = tmp_path / "joint"
    train_detectors.main([*common, "--out", str(joint), "--init-detector", str(first / "detector.safetensors"),
                          "--detector-steps", "2", "--localizer-steps", "2",
                          "--joint-denoiser-lr", "1e-2", "--denoiser-reg", "0.5"])
    before, after = (load_model(LatentDenoiser, DenoiserConfig, d / "denoiser.safetensors", DENOISER_FORMAT)
                     for d in (first, joint))
    assert any(not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    analyzer = InpaintingAnalyzer.load(joint, bundle.vae, vae_fingerprint=bundle.transform.config.vae_fingerprint)
    assert analyzer.detector.config.training["joint_denoiser"] == {"lr": 1e-2, "reg": 0.5}
    # Calibrated on the new denoiser's maps, not on the maps of the one it started from.
    val = dict(np.load(next((tmp_path / "work").glob("val-*-12.npz"))))
    thresholds = []
    for denoiser in (after, before):
        again = copy.deepcopy(analyzer.detector)
        calibrate_detector(again, val, train_detectors.lare_maps(denoiser, val))
        thresholds.append(again.config.threshold)
    assert thresholds[0] == analyzer.detector.config.threshold != thresholds[1]
    result = analyzer.analyze([procedural_image(77, size=200)], localize=True)[0]
    assert 0.0 <= result.probability <= 1.0 and result.mask.shape == (200, 200)
    # A pretrained UNet is not trained here, and there is nothing to train with it at 0 detector steps.
    with pytest.raises(SystemExit):
        train_detectors.main([*common, "--out", str(tmp_path / "x"), "--detector-steps", "0",
                              "--init-detector", str(first / "detector.safetensors"),
                              "--joint-denoiser-lr", "1e-3"])
    assert "--joint-denoiser-lr trains the latent denoiser with the detector" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
