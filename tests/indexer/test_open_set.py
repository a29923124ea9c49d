"""Open-set decisions: the background score, its file, and how the bundle and the index use it."""

import numpy as np
import pytest

from origin_id.indexer.config import Settings
from origin_id.indexer.model_bundle import ModelBundle
from origin_id.indexer.open_set import BackgroundSet


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def test_background_score_is_the_kth_nearest_image_each_met_by_the_best_view():
    background = unit(np.eye(4))  # four orthogonal images
    bg = BackgroundSet(background, "m", k=2)
    # View 0 resembles images 0 and 1 (0.8, 0.6); view 1 is image 2 itself.
    views = unit([[0.8, 0.6, 0, 0], [0, 0, 1, 0]])
    assert bg.score(views) == pytest.approx(0.8)  # images met at 1.0 (view 1), 0.8, 0.6 (view 0), 0
    assert BackgroundSet(background, "m", k=1).score(views) == pytest.approx(1.0)
    assert BackgroundSet(background, "m", k=3).score(views) == pytest.approx(0.6)
    np.testing.assert_allclose(bg.scores(np.stack([views, views[::-1]])), [0.8, 0.8], atol=1e-6)
    # The calibrated weight scales it: 0 is the raw score's rule.
    assert BackgroundSet(background, "m", k=2, weight=0.5).score(views) == pytest.approx(0.4)
    assert BackgroundSet(background, "m", k=2, weight=0.0).score(views) == 0.0


def test_background_images_are_met_by_their_regions_when_references_are():
    # Two background images of two rows each (whole, one region); the query resembles
    # image 0's region and image 1 whole.
    layout = ((0.0, 0.0, 0.5, 0.5),)
    rows = unit([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    bg = BackgroundSet(rows, "m", k=2, layout=layout)
    views = unit([[0, 0.9, 0.436, 0]])
    assert bg.images == 2
    assert bg.score(views) == pytest.approx(0.436, abs=1e-3)  # image 0 at 0.9 (region), image 1 at 0.436
    assert bg.score(views, regions=False) == pytest.approx(0.0, abs=1e-6)  # whole rows only: 0.0 and 0.436
    with pytest.raises(ValueError, match="do not split"):
        BackgroundSet(rows[:3], "m", k=1, layout=layout)


def test_a_background_set_round_trips_and_refuses_a_k_it_cannot_hold(tmp_path):
    vectors = unit(np.random.default_rng(0).normal(size=(20, 8)))
    bg = BackgroundSet(vectors, "id2-x", k=5, match_margin=0.123, calibration={"fpr": 0.01})
    bg.save(tmp_path / "b.safetensors")
    back = BackgroundSet.load(tmp_path / "b.safetensors")
    assert (back.model_version, back.k, back.match_margin, back.calibration) == ("id2-x", 5, 0.123, {"fpr": 0.01})
    assert (back.per_image, back.layout) == (1, ())
    np.testing.assert_allclose(back.vectors, vectors, atol=1e-3)  # kept as float16
    with pytest.raises(ValueError, match="k = 30"):
        BackgroundSet(vectors, "m", k=30)
    layout = ((0.25, 0.25, 0.75, 0.75),)
    BackgroundSet(vectors, "id2-x", k=3, layout=layout, weight=0.6).save(tmp_path / "r.safetensors")
    back = BackgroundSet.load(tmp_path / "r.safetensors")
    assert (back.per_image, back.layout, back.images, back.weight) == (2, layout, 10, 0.6)
    assert (back.verify_inliers, back.verify_margin) == (0, 0.0)  # files before verification: rule off
    BackgroundSet(vectors, "id2-x", k=3, verify_inliers=15, verify_margin=0.25,
                  verify_coverage=0.4).save(tmp_path / "v.safetensors")
    back = BackgroundSet.load(tmp_path / "v.safetensors")
    assert (back.verify_inliers, back.verify_margin, back.verify_coverage) == (15, 0.25, 0.4)
    assert (back.rank_lead, back.ranking_lead) == (0, 15)  # ranked by a lead of the decision's count
    BackgroundSet(vectors, "id2-x", k=3, verify_inliers=40, rank_lead=12).save(tmp_path / "k.safetensors")
    assert BackgroundSet.load(tmp_path / "k.safetensors").ranking_lead == 12
    # A file calibrated before the coverage clause: the clause is off.
    from safetensors.numpy import save_file
    save_file({"vectors": vectors.astype(np.float16)}, str(tmp_path / "old.safetensors"), metadata={
        "model_version": "id2-x", "k": "3", "match_margin": "0.5", "verify_inliers": "15", "verify_margin": "0.25"})
    old = BackgroundSet.load(tmp_path / "old.safetensors")
    assert old.verify_coverage == float("inf") and (old.dense_inliers, old.dense_agreement) == (0, float("inf"))
    BackgroundSet(vectors, "id2-x", k=3, verify_inliers=40, dense_inliers=15,
                  dense_agreement=0.93).save(tmp_path / "d.safetensors")
    back = BackgroundSet.load(tmp_path / "d.safetensors")
    assert (back.dense_inliers, back.dense_agreement) == (15, 0.93)


def test_a_match_is_a_high_margin_or_a_verified_moderate_one():
    bg = BackgroundSet(unit(np.eye(4)), "m", k=1, match_margin=0.6, verify_inliers=15, verify_margin=0.3)
    assert bg.decide(0.6, -1) and bg.decide(0.7, 0)  # by score alone, verified or not
    assert bg.decide(0.3, 15) and bg.decide(0.5, 200)  # verified, above the verified margin
    assert not bg.decide(0.29, 500)  # too unlike, however many inliers
    assert not bg.decide(0.59, 14) and not bg.decide(0.59, -1)  # too few inliers, or not verified
    assert not bg.decide(0.29, 500, coverage=1.0)  # no coverage clause calibrated: off
    off = BackgroundSet(unit(np.eye(4)), "m", k=1, match_margin=0.6)
    assert not off.decide(0.59, 500)  # not calibrated for verification: the margin alone


def test_a_verified_match_at_a_low_margin_needs_its_inliers_to_cover_the_query():
    bg = BackgroundSet(unit(np.eye(4)), "m", k=1, match_margin=0.6, verify_inliers=15, verify_margin=0.3,
                       verify_coverage=0.35)
    assert bg.decide(0.05, 40, coverage=0.35) == "verified"  # a deep crop: low score, fitted across the query
    assert not bg.decide(0.05, 40, coverage=0.34)  # a shared part: fitted inside the part only
    assert not bg.decide(0.05, 14, coverage=0.9)  # too few inliers, whatever they cover
    assert bg.decide(0.3, 15, coverage=0.0) == "verified"  # the verified margin still declares alone


def test_few_inliers_declare_when_the_pixels_agree():
    bg = BackgroundSet(unit(np.eye(4)), "m", k=1, match_margin=0.6, verify_inliers=40, verify_margin=0.3,
                       dense_inliers=15, dense_agreement=0.95)
    assert bg.decide(0.05, 15, agreement=0.95) == "verified"  # a crop of a drawing: 15 inliers, pixels agree
    assert not bg.decide(0.05, 15, agreement=0.94)  # a shared part: the pixels elsewhere differ
    assert not bg.decide(0.05, 14, agreement=1.0)  # too few inliers, however alike (flat pictures agree)
    assert not BackgroundSet(unit(np.eye(4)), "m", k=1, match_margin=0.6, verify_inliers=40, verify_margin=0.3,
                             dense_agreement=0.5).decide(0.05, 400, agreement=1.0)  # no count: clause off


def test_the_bundle_refuses_a_background_set_of_other_weights(tmp_path, bundle):
    path = tmp_path / "other.safetensors"
    BackgroundSet(unit(np.ones((12, bundle.dim))), "id2-someone-else", k=3).save(path)
    with pytest.raises(ValueError, match="made for model id2-someone-else"):
        ModelBundle.load(Settings.from_env({}, inpainting=False, background=str(path)))
    mine = tmp_path / "mine.safetensors"
    BackgroundSet(unit(np.random.default_rng(1).normal(size=(12, bundle.dim))), bundle.version, k=3,
                  match_margin=0.2).save(mine)
    loaded = ModelBundle.load(Settings.from_env({}, inpainting=False, background=str(mine)))
    assert loaded.background is not None and loaded.match_threshold == pytest.approx(0.2)
    raw = ModelBundle.load(Settings.from_env({}, inpainting=False, background="none"))
    assert raw.background is None and raw.match_threshold == raw.transform.config.match_threshold
