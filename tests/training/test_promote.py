"""``training.promote``: the one step that changes the bundled models checks what it copies."""

import shutil

import pytest

from origin_id.indexer.transform import LinearTransform
from training import promote

SHIPPED = promote.BUNDLED


@pytest.fixture
def bundled(tmp_path, monkeypatch):
    """A copy of the bundled models to promote into."""
    target = tmp_path / "default_model"
    shutil.copytree(SHIPPED, target)
    monkeypatch.setattr(promote, "BUNDLED", target)
    return target


def test_a_complete_detectors_run_is_promoted_and_an_incomplete_one_refused(bundled, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(SHIPPED / "inpainting", run)
    (bundled / "inpainting" / "localizer.safetensors").write_bytes(b"stale")
    promote.main(["detectors", str(run)])
    for name in ("detector.safetensors", "localizer.safetensors", "denoiser.safetensors"):
        assert (bundled / "inpainting" / name).read_bytes() == (run / name).read_bytes()
    (run / "localizer.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        promote.main(["detectors", str(run)])
    assert (bundled / "inpainting" / "localizer.safetensors").exists()


def test_a_transform_of_another_vae_or_uncalibrated_is_refused(bundled, tmp_path):
    transform = LinearTransform.load(SHIPPED / "transform.safetensors")
    transform.config.vae_fingerprint = "0" * 16
    transform.save(tmp_path / "other.safetensors")
    with pytest.raises(SystemExit, match="trained on VAE 0000"):
        promote.main(["transform", str(tmp_path / "other.safetensors")])
    transform = LinearTransform.load(SHIPPED / "transform.safetensors")
    transform.config.calibration = {}
    transform.save(tmp_path / "raw.safetensors")
    with pytest.raises(SystemExit, match="no calibrated match threshold"):
        promote.main(["transform", str(tmp_path / "raw.safetensors")])
    assert (bundled / "transform.safetensors").read_bytes() == (SHIPPED / "transform.safetensors").read_bytes()


def test_a_background_set_of_other_weights_or_uncalibrated_is_refused(bundled, tmp_path, bundle):
    import numpy as np

    from origin_id.indexer.open_set import FILE_NAME, BackgroundSet

    vectors = np.random.default_rng(0).normal(size=(16, bundle.dim)).astype(np.float32)
    BackgroundSet(vectors, "id2-elsewhere", k=4, calibration={"x": 1}).save(tmp_path / "other.safetensors")
    with pytest.raises(SystemExit, match="made for model id2-elsewhere"):
        promote.main(["background", str(tmp_path / "other.safetensors")])
    BackgroundSet(vectors, bundle.version, k=4).save(tmp_path / "raw.safetensors")
    with pytest.raises(SystemExit, match="no calibrated match margin"):
        promote.main(["background", str(tmp_path / "raw.safetensors")])
    BackgroundSet(vectors, bundle.version, k=4, calibration={"x": 1}).save(tmp_path / "ok.safetensors")
    promote.main(["background", str(tmp_path / "ok.safetensors")])
    assert (bundled / FILE_NAME).read_bytes() == (tmp_path / "ok.safetensors").read_bytes()
