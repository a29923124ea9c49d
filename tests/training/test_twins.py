"""Same picture, other file: PDQ twins, and the package reader and de-duplication around them."""

import numpy as np
from PIL import Image

from training.data import dedupe, package_images, procedural_image
from training.twins import pdq_hashes, twins


def test_a_resized_recompressed_copy_is_a_twin_and_another_picture_is_not():
    pictures = [procedural_image(100 + i, size=320) for i in range(4)]
    copies = [pictures[0].resize((200, 200)), pictures[2].resize((480, 480)).rotate(0)]
    same = twins(pdq_hashes(copies), pdq_hashes(pictures))
    assert same.shape == (2, 4)
    assert same[0].tolist() == [True, False, False, False] and same[1].tolist() == [False, False, True, False]
    # A flat image's hash has no quality: it is nobody's twin, not even its own.
    flat = [Image.new("RGB", (200, 200), (90, 90, 90))]
    assert not twins(pdq_hashes(flat), pdq_hashes(flat)).any()


def test_dedupe_keeps_the_first_of_each_picture():
    a, b = procedural_image(1, size=256), procedural_image(2, size=256)
    kept = dedupe([a, b, a.resize((128, 128)), b.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert kept[:2] == [a, b] and len(kept) == 3  # the mirrored b is another picture to dedupe


def test_package_images_flattens_transparency_and_skips_small_and_broken_files(tmp_path):
    root = tmp_path / "pkg" / "usr" / "share"
    root.mkdir(parents=True)
    rgba = Image.new("RGBA", (300, 200), (255, 0, 0, 0))  # fully transparent: white after flattening
    rgba.save(root / "clear.png")
    procedural_image(3, size=1200).save(root / "big.jpg")
    Image.new("RGB", (40, 40)).save(root / "icon.png")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "notes.svg").write_text("<svg/>")
    images = package_images(tmp_path / "pkg", max_side=768)
    assert sorted(im.size for im in images) == [(300, 200), (768, 768)]
    clear = next(im for im in images if im.size == (300, 200))
    assert np.asarray(clear).min() == 255
