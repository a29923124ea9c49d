"""Keypoints and geometric verification on real photographs (scikit-image samples)."""

import struct

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from origin_id.indexer.local_features import (
    PICTURE_SIDE,
    LocalFeatures,
    QueryFeatures,
    extract,
    inliers,
    matches,
)


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


def test_a_reference_stores_its_picture_small_and_older_rows_still_read(photos):
    features = extract(photos["rocket"])  # 640 x 427, analysed at 512 x 342
    assert features.picture.shape == (342, 512)
    back = LocalFeatures.decode(features.encode())
    assert back.picture.shape == (86, PICTURE_SIDE)  # 342 * 128 / 512 = 85.5
    np.testing.assert_array_equal(back.picture, features.as_reference().picture)
    # The keypoint index reads the descriptors alone: a row's bytes up to them are enough.
    prefix = LocalFeatures.decode(features.encode()[:6 + 36 * len(features)], keypoints_only=True)
    assert prefix.picture is None and len(prefix) == len(features)
    with pytest.raises(ValueError, match="need"):
        LocalFeatures.decode(features.encode()[:6 + 36 * len(features) - 1], keypoints_only=True)
    # Format 1 (before pictures): header, points, descriptors. Read; its fits have no agreement.
    n = len(features)
    old = (struct.pack("<HHH", 1, n, features.side) + features.points.astype("<f2").tobytes()
           + features.descriptors.tobytes())
    legacy = LocalFeatures.decode(old)
    assert legacy.picture is None and len(legacy) == n
    fitted = QueryFeatures.of(photos["rocket"].resize((320, 213))).fit(legacy)
    assert fitted.inliers >= 40 and fitted.agreement == 0.0


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


def test_a_copy_agrees_with_its_origin_where_a_shared_part_does_not(photos):
    """Laid on its origin by the fitted transform, a crop agrees with it pixel for pixel,
    through a change of brightness and contrast, a grey conversion or a downscale; the photo
    that carries a part of the astronaut fits her by inliers inside the part and disagrees
    everywhere else. A padded, tilted copy agrees tile by tile outside its padding. All
    through the stored (small) picture, as the service compares."""
    from PIL import ImageEnhance

    origin = photos["astronaut"]
    stored = LocalFeatures.decode(extract(origin).encode())
    w, h = origin.size
    crop = origin.crop((int(0.3 * w), int(0.1 * h), int(0.9 * w), int(0.7 * h)))
    graded = ImageEnhance.Contrast(ImageEnhance.Brightness(crop).enhance(1.3)).enhance(0.7)
    for copy in (crop, graded, crop.convert("L"), crop.resize((120, 120))):
        fitted = QueryFeatures.of(copy).fit(stored)
        assert fitted.inliers >= 40 and fitted.agreement >= 0.95, fitted
    composite = photos["coffee"].copy()
    composite.paste(origin.crop((int(0.25 * w), int(0.05 * h), int(0.65 * w), int(0.45 * h))).resize((164, 164)),
                    (20, 20))
    part = QueryFeatures.of(composite).fit(stored)
    assert part.inliers >= 15 and part.agreement < 0.7, part
    padded = QueryFeatures.of(crop_and_tilt(origin)).fit(stored)
    assert padded.inliers >= 60 and padded.agreement >= 0.95, padded


def test_a_copy_under_a_caption_and_stickers_agrees_tile_by_tile(photos):
    """A caption band, a watermark and stickers cover a quarter of the copy: the whole
    overlap's correlation falls well below a clean copy's, but most textured tiles agree
    as before (a photo sharing a pasted part still disagrees: the test above)."""
    from PIL import ImageDraw

    for name in ("astronaut", "chelsea"):
        origin = photos[name]
        copy = origin.copy()
        draw = ImageDraw.Draw(copy)
        w, h = copy.size
        draw.rectangle((0, int(0.85 * h), w, h), fill=(0, 0, 0))
        draw.text((10, int(0.88 * h)), "WHEN YOU SEE IT", fill=(255, 255, 255))
        for cx, cy, r in ((0.2, 0.3, 0.08), (0.7, 0.2, 0.06), (0.5, 0.6, 0.07)):
            draw.ellipse((int((cx - r) * w), int((cy - r) * h), int((cx + r) * w), int((cy + r) * h)),
                         fill=(230, 40, 180))
        fitted = QueryFeatures.of(copy).fit(LocalFeatures.decode(extract(origin).encode()))
        assert fitted.inliers >= 40 and fitted.agreement >= 0.95, (name, fitted)


def test_matches_are_opencv_brute_force_matches_after_the_ratio_test(photos):
    """FAISS finds them (a fourth of the time); they are the very pairs, in the very order,
    that OpenCV's ``knnMatch`` and a loop keeping each reference keypoint's closest give, so
    RANSAC draws the same samples."""
    import cv2

    from origin_id.indexer.local_features import RATIO

    def brute_force(q, r):
        closest = {}
        for p in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(q, r, k=2):
            passes = len(p) == 2 and p[0].distance < RATIO * p[1].distance
            if passes and (p[0].trainIdx not in closest or p[0].distance < closest[p[0].trainIdx].distance):
                closest[p[0].trainIdx] = p[0]
        return [m.queryIdx for m in closest.values()], [m.trainIdx for m in closest.values()]

    features = [extract(im) for im in photos.values()] + [extract(crop_and_tilt(photos["astronaut"]))]
    for q in features:
        for r in features:
            found = matches(q.descriptors, r.descriptors)
            assert (found[0].tolist(), found[1].tolist()) == brute_force(q.descriptors, r.descriptors)
    assert len(matches(features[-1].descriptors, features[0].descriptors)[0]) >= 60


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
