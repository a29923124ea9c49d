"""The allowed data: photo splits that never move."""

from training.data import SPLITS, procedural_image, split_of


def test_photo_split_is_stable_and_covers_all_splits():
    ims = [procedural_image(i, size=64) for i in range(60)]
    first = [split_of(im) for im in ims]
    assert first == [split_of(im.copy()) for im in ims]
    assert set(first) == set(SPLITS)
