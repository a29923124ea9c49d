"""QueryMask: the cut mask at the query's size, its area, box and PNG, checked against
the drawn mask and two independent PNG decoders."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from origin_id.detectors.analyzer import InpaintingResult
from origin_id.detectors.query_mask import MASK_WORK_SIDE, QueryMask, upsample_probability


def _decode_png(data: bytes) -> np.ndarray:
    """The PNG's pixels, by Pillow and by OpenCV (libpng), which must agree; zlib checks the stream."""
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "L"
        pixels = np.asarray(im)
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), pixels)
    idat_len = int.from_bytes(data[33:37], "big")
    zlib.decompress(data[41:41 + idat_len])  # raises on a bad Adler-32
    return pixels


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


@pytest.mark.parametrize("trial", range(30))
def test_png_area_and_box_follow_the_drawn_mask(trial):
    rng = np.random.default_rng(trial)
    h, w = (int(v) for v in rng.integers(1, 50, 2))
    cut = rng.random((h, w)) < rng.uniform(0, 0.6)
    if trial % 3 == 0:
        cut[:] = cut[0]  # every row the same: one written row, the rest repeats
    if trial % 5 == 0:
        cut[:] = False
    size = (w + int(rng.integers(0, 400)), h + int(rng.integers(0, 400)))
    region = QueryMask(cut, size)
    drawn = region.array
    assert drawn.shape == (size[1], size[0]) and drawn.dtype == bool
    pixels = _decode_png(region.png())
    assert set(np.unique(pixels)) <= {0, 255}
    assert np.array_equal(pixels == 255, drawn)
    assert region.area_fraction == pytest.approx(drawn.mean(), abs=1e-12)
    assert region.bbox == _box_of(drawn)


def test_nearest_upscale_copies_each_cut_cell_to_its_block():
    cut = np.array([[True, False], [False, True]])
    drawn = QueryMask(cut, (4, 6)).array
    assert np.array_equal(drawn, np.kron(cut, np.ones((3, 2), bool)))


def test_large_query_masks_are_cut_at_a_bounded_size():
    """Up to MASK_WORK_SIDE the mask is the bilinear map's exact cut; above, the cut is made
    at that size and scaled up, which moves edges by a few pixels of the query at most."""
    rng = np.random.default_rng(3)
    prob = cv2.GaussianBlur(rng.random((64, 64)).astype(np.float32), (0, 0), 2)
    threshold = float(np.quantile(prob, 0.7))
    small = (MASK_WORK_SIDE, 700)
    exact_small = upsample_probability(prob, small) >= threshold
    assert np.array_equal(QueryMask.from_probability(prob, small, threshold).array, exact_small)
    for size in [(4000, 3000), (4000, 300)]:
        region = QueryMask.from_probability(prob, size, threshold)
        assert region.cut.shape == (min(size[1], MASK_WORK_SIDE), MASK_WORK_SIDE)
        exact = upsample_probability(prob, size) >= threshold
        assert (region.array == exact).mean() > 0.99
        assert np.array_equal(_decode_png(region.png()) == 255, region.array)
        assert region.area_fraction == pytest.approx(region.array.mean(), abs=1e-12)
        assert region.bbox == _box_of(region.array)
        assert region.area_fraction == pytest.approx(exact.mean(), abs=0.01)


def test_the_verdict_reports_the_region():
    region = QueryMask(np.eye(8, dtype=bool), (80, 40))
    result = InpaintingResult(0.9, True, 0.5, True, region)
    assert result.mask.shape == (40, 80) and result.bbox == (0, 0, 80, 40)
    assert result.area_fraction == pytest.approx(1 / 8)
    assert np.array_equal(_decode_png(result.mask_png()) == 255, result.mask)
    empty = InpaintingResult(0.9, True, 0.5, True, QueryMask.from_array(np.zeros((4, 4), bool)))
    assert empty.bbox is None and empty.area_fraction == 0.0
    skipped = InpaintingResult(0.1, False, 0.5, False)
    assert skipped.mask is None and skipped.mask_png() == b"" and skipped.bbox is None


def test_a_cut_larger_than_the_query_is_refused():
    with pytest.raises(ValueError, match="smaller than the cut"):
        QueryMask(np.zeros((10, 10), bool), (5, 10))
    with pytest.raises(ValueError, match="2-D bool"):
        QueryMask(np.zeros((10, 10), np.uint8), (10, 10))
