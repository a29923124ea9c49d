"""The training edit generator."""

import numpy as np

from training.data import procedural_image
from training.edits import FAMILIES, apply


def test_every_edit_family_is_deterministic_per_seed():
    im = procedural_image(7, size=160)
    for name in FAMILIES:
        a, b = apply(name, im, seed=3), apply(name, im, seed=3)
        assert np.array_equal(np.asarray(a), np.asarray(b)), name
