"""``python -m training.train_detectors`` end to end, on a directory of one's own photos."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from origin_id.detectors import analyzer as an
from origin_id.detectors.denoiser import FORMAT as DENOISER_FORMAT
from origin_id.detectors.denoiser import DenoiserConfig, LatentDenoiser
from origin_id.detectors.unet_lare import UNetLare
from origin_id.models.weights import load_model
from tests.detectors.test_unet_lare import save_tiny_pipeline
from training.cnn_inpainter import DEFAULT_WEIGHTS, weights_digest
from training.data import procedural_image


def test_detectors_train_on_a_directory_of_ones_own_photos(tmp_path, bundle, capsys):
    """``--photos DIR``: the directory's train and val splits feed training and calibration,
    its samples are cached under a name of their own, and the result serves."""
    from origin_id.detectors.analyzer import InpaintingAnalyzer
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


def test_training_with_a_pretrained_unet_gives_a_directory_the_service_loads(tmp_path, bundle):
    """``--lare-unet``: the LaRE maps of a pretrained pipeline's UNet (a tiny one here)."""
    from training import train_detectors

    pipeline = save_tiny_pipeline(tmp_path / "tiny-sd")

    out = tmp_path / "inpainting"
    train_detectors.main([
        "--lare-unet", str(pipeline), "--out", str(out), "--work-dir", str(tmp_path / "work"),
        "--results", str(tmp_path / "results"), "--train-samples", "48", "--val-samples", "24",
        "--detector-steps", "2", "--localizer-steps", "2", "--eval-every", "2", "--batch", "8",
    ])
    assert (out / an.UNET_LARE_FILE).is_file() and not (out / an.FILES["denoiser"]).exists()
    analyzer = an.InpaintingAnalyzer.load(out, bundle.vae, vae_fingerprint=bundle.transform.config.vae_fingerprint)
    assert isinstance(analyzer.denoiser, UNetLare) and analyzer.denoiser.config.source == str(pipeline.resolve())
    assert analyzer.detector.config.lare_source == str(pipeline.resolve())

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)) for _ in range(2)]
    results = analyzer.analyze(images, localize=True)
    assert all(0.0 <= r.probability <= 1.0 and r.mask.shape == (200, 300) for r in results)
    # The served LaRE map is the pretrained UNet's.
    x = torch.from_numpy(np.stack([np.asarray(im.resize((256, 256)), np.float32) for im in images]))
    _, served = analyzer.error_maps(x.permute(0, 3, 1, 2) / 127.5 - 1)
    latents = bundle.vae.encode(x.permute(0, 3, 1, 2) / 127.5 - 1).latent_dist.mean
    torch.testing.assert_close(served, UNetLare.load(out / an.UNET_LARE_FILE).lare(latents))
