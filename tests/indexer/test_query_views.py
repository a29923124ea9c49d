"""Query views: the mirror and the border-trimmed view, and what they find."""

import numpy as np
import torch
from PIL import Image, ImageOps

from origin_id.indexer.pipeline import IngestItem
from origin_id.indexer.query_views import MIN_TRIM, query_batch, query_views, trim_borders
from origin_id.models.vae import preprocess
from tests.conftest import encode
from training.edits import apply


def _photo(reference_images) -> Image.Image:
    return reference_images[0].resize((320, 240))


def test_trim_recovers_the_picture_inside_bars_canvas_and_chrome(reference_images):
    photo = _photo(reference_images)
    for seed in range(6):
        framed = apply("letterbox", photo, seed)
        trimmed = trim_borders(framed)
        assert trimmed is not None, f"seed {seed}: nothing trimmed from {framed.size}"
        # Close to the pasted picture: JPEG blurs the edge, and margins thinner than
        # MIN_TRIM of a side are deliberately left (they do not disturb the embedding).
        tolerance = 2 * MIN_TRIM + 0.01
        assert abs(trimmed.width - photo.width) <= tolerance * framed.width, (seed, framed.size, trimmed.size)
        assert abs(trimmed.height - photo.height) <= tolerance * framed.height, (seed, framed.size, trimmed.size)


def test_trim_finds_a_narrow_picture_in_a_post_under_a_title_bar(reference_images):
    """A post: a thin coloured bar, a header of text, the picture narrower than the frame
    (its rows are mostly frame), text below, the picture a tenth of the whole."""
    from PIL import ImageDraw

    photo = _photo(reference_images)
    for seed, (width, x) in enumerate([(900, 40), (1000, 300), (760, 200)]):
        frame = Image.new("RGB", (width, 760), (21, 32, 43))
        draw = ImageDraw.Draw(frame)
        draw.rectangle((0, 0, width, 7), fill=(90, 90, 200))
        rng = np.random.default_rng(seed)
        for y in [*range(30, 150, 22), *range(420, 740, 22)]:
            draw.text((16, y), " ".join(rng.choice(["news", "photo", "viral", "today"], 6)), fill=(230, 230, 230))
        frame.paste(photo, (x, 160))
        trimmed = trim_borders(frame)
        assert trimmed is not None and abs(trimmed.width - photo.width) <= 0.07 * width, (seed, trimmed)
        assert abs(trimmed.height - photo.height) <= 0.07 * frame.height, (seed, trimmed.size)


def test_nothing_to_trim_on_a_plain_photo(reference_images):
    assert trim_borders(_photo(reference_images)) is None
    assert trim_borders(Image.new("RGB", (8, 8))) is None  # too small to judge
    assert trim_borders(Image.new("RGB", (200, 200), (30, 60, 90))) is None  # all border: keep it


def test_views_order_and_options(reference_images):
    photo = _photo(reference_images)
    framed = apply("letterbox", photo, 1)
    assert len(query_views(photo)) == 2 and len(query_views(framed)) == 4
    views = query_views(framed, flip=True, trim=True)
    assert views[0] is framed
    assert np.array_equal(np.asarray(views[2]), np.asarray(ImageOps.mirror(views[0])))
    assert len(query_views(framed, flip=False, trim=False)) == 1


def test_query_batch_is_the_views_preprocessed(reference_images):
    """The mirror views' tensors are flipped, not resized again: the same pixels exactly."""
    framed = apply("letterbox", _photo(reference_images), 1).resize((700, 530))
    for flip in (True, False):
        for trim in (True, False):
            expected = preprocess(query_views(framed, flip=flip, trim=trim))
            assert torch.equal(query_batch(framed, flip=flip, trim=trim), expected), (flip, trim)


def test_letterboxed_and_mirrored_copies_are_found(origin, reference_images):
    photos = reference_images[:6]
    refs = [o.reference for o in origin.pipeline.run(IngestItem.from_bytes(encode(im)) for im in photos)]
    for i, im in enumerate(photos):
        framed = ImageOps.mirror(apply("letterbox", im, 10 + i))
        found = origin.identify(encode(framed), top_k=3)
        assert found.candidates[0].reference.id == refs[i].id, f"image {i}"
