"""CopyMoveSearch on real photos: a pasted patch is found at its shift, clean photos and
stripes (which match themselves at many shifts) score nothing, and the verdict adds the
score with the checkpoint's weight."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from origin_id.detectors import detector as det
from origin_id.detectors.copy_move import CopyMoveSearch, high_pass
from origin_id.models.vae import preprocess
from tests.conftest import skimage_photos

SHIFT = (70, -90)  # (dy, dx) from the pasted region to its source


def _jpeg(arr: np.ndarray, quality: int = 90) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def textured() -> list[np.ndarray]:
    """The three most textured 256x256 centre crops of scikit-image's photos."""
    crops = []
    for im in skimage_photos(256):
        w, h = im.size
        crops.append(np.asarray(im.crop(((w - 256) // 2, (h - 256) // 2, (w + 256) // 2, (h + 256) // 2))))
    level = [float(high_pass(preprocess([Image.fromarray(c)])).std()) for c in crops]
    return [crops[i] for i in np.argsort(level)[::-1][:3]]


def _paste(arr: np.ndarray) -> np.ndarray:
    out = arr.copy()
    y, x, size = 20, 150, 72
    dy, dx = SHIFT
    out[y:y + size, x:x + size] = arr[y + dy:y + dy + size, x + dx:x + dx + size]
    return out


def test_a_pasted_patch_is_found_at_its_shift(textured):
    """In each photo the paste is the best match, at its shift; where the photo has no other
    self-similar content (the most textured, gravel), it is also evidence on its own."""
    search = CopyMoveSearch()
    for k, arr in enumerate(textured):
        clean, = search(preprocess([_jpeg(arr)]))
        pasted, = search(preprocess([_jpeg(_paste(arr))]))
        assert clean.score < 0.005, f"clean photo scored {clean.score:.3f} (area {clean.area:.3f})"
        assert pasted.area > 0.04, pasted  # the pasted region is 7.9% of the image
        assert any(abs(pasted.shift[0] - s * SHIFT[0]) <= 1 and abs(pasted.shift[1] - s * SHIFT[1]) <= 1
                   for s in (1, -1)), pasted.shift
        if k == 0:
            assert pasted.score > 0.02, pasted


def test_stripes_that_match_at_many_shifts_do_not_count():
    """Vertical stripes repeat under every vertical shift: a large matched area, no evidence."""
    rng = np.random.default_rng(0)
    columns = np.cumsum(rng.normal(0, 12, 256))
    gray = np.clip(128 + (columns - columns.mean()) * 0.5, 0, 255)
    arr = np.repeat(np.tile(gray, (256, 1))[..., None], 3, axis=2)
    arr = np.clip(arr + rng.normal(0, 1.0, arr.shape), 0, 255).astype(np.uint8)
    evidence, = CopyMoveSearch()(preprocess([_jpeg(arr)]))
    assert evidence.area > 0.05, evidence
    assert evidence.score < 0.005, evidence


def test_verdict_adds_the_weighted_copy_move_score():
    model = det.InpaintingDetector(det.DetectorConfig(copy_move_weight=2.0)).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        out = model(x, torch.rand(1, 3, 64, 64), torch.rand(1, 4, 8, 8))
        plain = model.verdict_logit(out, out)
        fused = model.verdict_logit(out, out, torch.tensor([0.04]))
    assert torch.allclose(fused - plain, torch.tensor([2.0 * 0.2]))


def test_copy_move_scores_up_to_the_floor_add_nothing():
    """Chance matches under the floor leave the verdict as the network gave it; above it the
    term grows from zero (no jump at the floor), as ``weight * sqrt(score - floor)``."""
    model = det.InpaintingDetector(det.DetectorConfig(copy_move_weight=2.0, copy_move_floor=0.002)).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        out = model(x, torch.rand(1, 3, 64, 64), torch.rand(1, 4, 8, 8))
        plain = model.verdict_logit(out, out)
        added = [float(model.verdict_logit(out, out, torch.tensor([s])) - plain)
                 for s in (0.0, 0.0015, 0.002, 0.0021, 0.042)]
    assert added[:3] == [0.0, 0.0, 0.0]
    assert added[3] == pytest.approx(2.0 * 0.0001 ** 0.5, rel=1e-3)
    assert added[4] == pytest.approx(2.0 * 0.2, rel=1e-4)
    assert torch.allclose(det.copy_move_evidence(torch.tensor([0.001, 0.011]), 0.002),
                          torch.tensor([0.0, 0.009]).sqrt())


def test_bundled_detector_uses_copy_move(bundle):
    weight = bundle.inpainting.detector.config.copy_move_weight
    assert weight > 0, "the shipped detector's verdict should include the copy-move search"
