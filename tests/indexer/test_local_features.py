"""Keypoints and geometric verification on real photographs (scikit-image samples)."""

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from origin_id.indexer.local_features import LocalFeatures, QueryFeatures, extract, inliers


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
            for name in ("astronaut", "coffee", "chelsea", "rocket")}


def crop_and_tilt(image: Image.Image) -> Image.Image:
    """A 60% crop off-centre, padded onto a grey canvas and turned 12 degrees: the layout
    the global embedding cannot see through."""
    w, h = image.size
    crop = image.crop((int(0.3 * w), int(0.1 * h), int(0.9 * w), int(0.7 * h)))
    canvas = Image.new("RGB", (max(crop.size) + 80,) * 2, (128, 128, 128))
    canvas.paste(crop, (40, 40))
    return canvas.rotate(12, resample=Image.Resampling.BILINEAR, fillcolor=(128, 128, 128))


def test_features_round_trip_through_their_stored_form(photos):
    features = extract(photos["astronaut"])
    assert 100 < len(features) <= 500 and features.side == 512
    back = LocalFeatures.decode(features.encode())
    np.testing.assert_array_equal(back.descriptors, features.descriptors)
    np.testing.assert_allclose(back.points, features.points, atol=0.25)  # float16 at <= 512 px
    assert back.side == features.side


def test_stored_form_is_checked_not_trusted(photos):
    data = extract(photos["coffee"]).encode()
    with pytest.raises(ValueError, match="need"):
        LocalFeatures.decode(data[:-1])
    with pytest.raises(ValueError, match="format"):
        LocalFeatures.decode(b"\x09" + data[1:])
    with pytest.raises(ValueError, match="header"):
        LocalFeatures.decode(b"\x01")


def test_a_tilted_crop_fits_its_origin_and_not_other_photos(photos):
    query = QueryFeatures.of(crop_and_tilt(photos["astronaut"]))
    own = query.inliers(extract(photos["astronaut"]))
    others = [query.inliers(extract(photos[name])) for name in ("coffee", "chelsea", "rocket")]
    # Chance fits of unrelated photos reach 10-15 inliers (the decision's count is
    # calibrated above them); a copy's are several times more.
    assert own >= 60, own
    assert max(others) < 20, others


def test_a_copy_covers_the_query_where_a_shared_part_does_not(photos):
    """A tilted crop fits its origin across the query; a photo that only carries a part of
    another (here the astronaut's face pasted into the coffee photo) fits that photo by
    inliers inside the part: the coverage tells them apart where the inliers alone may not."""
    origin = photos["astronaut"]
    crop = QueryFeatures.of(crop_and_tilt(origin)).fit(extract(origin))
    w, h = origin.size
    composite = photos["coffee"].copy()
    composite.paste(origin.crop((int(0.25 * w), int(0.05 * h), int(0.65 * w), int(0.45 * h))).resize((164, 164)),
                    (20, 20))
    part = QueryFeatures.of(composite).fit(extract(origin))
    assert crop.inliers >= 60 and crop.coverage >= 0.3, crop
    assert part.inliers >= 15 and part.coverage < 0.1, part
    assert extract(composite).area == 512 * 341  # coverage is of the analysed copy's area
    assert LocalFeatures.decode(extract(origin).encode()).area == 0  # stored references do not keep it


def test_a_mirrored_copy_is_verified_through_the_mirrored_query(photos):
    origin = extract(photos["chelsea"])
    mirrored = ImageOps.mirror(photos["chelsea"]).resize((300, 200))
    assert inliers(extract(mirrored), origin) <= 10  # descriptors are not mirror-invariant
    assert QueryFeatures.of(mirrored).inliers(origin) >= 40


def test_a_flat_image_has_no_keypoints_and_verifies_nothing(photos):
    flat = Image.new("RGB", (64, 48), (200, 30, 30))
    features = extract(flat)
    assert len(features) == 0 and LocalFeatures.decode(features.encode()).side == 512
    assert QueryFeatures.of(flat).inliers(extract(photos["rocket"])) == 0


def test_the_picture_inside_a_post_is_verified_at_its_own_scale(photos):
    """A photo small inside a wide post: at the post's scale few of its keypoints survive;
    the picture found inside the borders (``trim_borders``) is analysed at full size and fits
    its origin by far more."""
    from PIL import ImageDraw

    from origin_id.indexer.query_views import trim_borders

    post = Image.new("RGB", (1600, 1100), (245, 245, 245))
    post.paste(photos["chelsea"].resize((510, 340)), (560, 330))
    ImageDraw.Draw(post).text((560, 690), "shared 2h ago", fill=(30, 30, 30))
    inner = trim_borders(post)
    assert inner is not None and inner.width < 700
    origin = extract(photos["chelsea"])
    whole, framed = QueryFeatures.of(post), QueryFeatures.of(post, inner)
    assert len(framed.views) == 3 and len(whole.views) == 2
    assert framed.inliers(origin) >= max(40, 2 * whole.inliers(origin)), (framed.inliers(origin), whole.inliers(origin))
