import io

import cv2
import numpy as np
import pytest
from PIL import Image

from training.data import grainy_image, procedural_image
from training.inpainting import FILLS, MASKS, TRAINING_ONLY_FILLS, finish, inpaint, make_mask


@pytest.mark.parametrize("kind", MASKS)
def test_masks_cover_a_plausible_area(kind):
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = make_mask(kind, 320, 240, rng)
        assert mask.shape == (240, 320) and mask.dtype == bool
        assert 0.005 < mask.mean() < 0.6, (kind, mask.mean())


@pytest.mark.parametrize("fill", FILLS + TRAINING_ONLY_FILLS)
def test_fills_change_the_hole_and_little_else(fill):
    rng = np.random.default_rng(1)
    image = procedural_image(5, size=256)
    example = inpaint(image, "rectangle", fill, rng)
    before, after = np.asarray(image), np.asarray(example.image)
    # Nothing changes away from the hole (the latent fill feathers its edge over a few pixels).
    near = cv2.dilate(example.mask.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
    assert (before[~near] == after[~near]).all()
    outside = ~example.mask
    if fill != "latent":  # the latent fill blends its edge in, over the band checked above
        assert (before[outside] == after[outside]).mean() > 0.99
    assert np.abs(before[example.mask].astype(int) - after[example.mask]).mean() > 1.0


def test_real_and_fake_are_saved_alike():
    rng = np.random.default_rng(2)
    real, _ = finish(procedural_image(6, size=200), np.zeros((200, 200), bool), rng)
    ex = inpaint(procedural_image(7, size=200), "brush", "telea", rng)
    fake, mask = finish(ex.image, ex.mask, rng)
    assert Image.open(io.BytesIO(real)).format == Image.open(io.BytesIO(fake)).format == "JPEG"
    assert mask.shape == Image.open(io.BytesIO(fake)).size[::-1]


def test_grainy_fields_are_reproducible_and_textured_at_fine_and_coarse_scales():
    """The grain scene set's point: texture a pixel or two across that a JPEG keeps, over
    structure tens of pixels across (relief, cells), in every field."""
    assert np.array_equal(np.asarray(grainy_image(3)), np.asarray(grainy_image(3)))
    assert not np.array_equal(np.asarray(grainy_image(3)), np.asarray(grainy_image(4)))
    fine, coarse = [], []
    for seed in range(20):
        buf = io.BytesIO()
        grainy_image(seed).save(buf, format="JPEG", quality=90)
        grey = np.asarray(Image.open(buf).convert("L"), np.float32)
        fine.append((grey - cv2.GaussianBlur(grey, (0, 0), 1.5)).std())
        coarse.append(cv2.GaussianBlur(grey, (0, 0), 8).std())
    assert min(fine) > 1.0 and np.median(fine) > 4.0
    assert min(coarse) > 4.0
