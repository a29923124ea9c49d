"""The open-set calibration's choice of a verification rule (``choose_verification``)."""

import numpy as np

from origin_id.indexer.open_set import BackgroundSet
from training.calibrate_open_set import ServedTop1, bg_decisions, choose_verification, margin_for


def calibrated(pos, neg, correct, inliers_pos, inliers_neg, target=0.03) -> BackgroundSet:
    bg = BackgroundSet(np.eye(4, dtype=np.float32), "m", k=1, match_margin=margin_for(neg, target))
    choose_verification(bg, pos, neg, correct, inliers_pos, inliers_neg, target)
    return bg


def test_verification_declares_more_right_matches_within_the_same_false_match_rate():
    rng = np.random.default_rng(0)
    neg = rng.normal(0.2, 0.1, 600)  # no-origin queries: moderate margins, few inliers
    inliers_neg = rng.poisson(3, 600)
    inliers_neg[:30] = 80  # look-alikes (5%, more than the target) fit well, at low margins
    neg[:30] = 0.0
    # Positives: half clear by score; half crops and tilts, low margins and many inliers.
    pos = np.concatenate([rng.normal(0.7, 0.05, 300), rng.normal(0.25, 0.1, 300)])
    inliers_pos = np.concatenate([rng.poisson(60, 300), rng.poisson(40, 300)])
    correct = np.ones(600, bool)
    bg = calibrated(pos, neg, correct, inliers_pos, inliers_neg)
    assert bg.verify_inliers > 0
    assert bg_decisions(bg, neg, inliers_neg).mean() <= 0.03
    declared = bg_decisions(bg, pos, inliers_pos).mean()
    assert declared > bg.calibration["margin alone: correct positives declared"] + 0.3
    assert bg.calibration["verified: correct positives declared"] == declared
    # The look-alikes' margins (0.0) are kept below the verified margin.
    assert bg.verify_margin > 0.0


def test_uninformative_inliers_leave_the_margin_alone():
    rng = np.random.default_rng(1)
    neg, pos = rng.normal(0.2, 0.1, 600), rng.normal(0.5, 0.1, 600)
    bg = calibrated(pos, neg, np.ones(600, bool), np.zeros(600, int), rng.poisson(3, 600))
    assert bg.verify_inliers == 0 and bg.match_margin == margin_for(neg, 0.03)
    assert not bg.decide(bg.match_margin - 1e-3, 10_000)


def test_counts_are_judged_on_the_top_1s_the_service_would_rank_first():
    """Wrong top-1s whose origin is found by its keypoints (many inliers, lower score) count as
    right under a count they reach; no-origin queries whose best-verified candidate reaches a
    count count as that candidate's matches, so a count low enough to reach look-alikes'
    fits is not chosen."""
    rng = np.random.default_rng(2)
    neg, inliers_neg = rng.normal(0.2, 0.1, 600), rng.poisson(3, 600)
    pos, inliers_pos = rng.normal(0.5, 0.05, 600), rng.poisson(3, 600)
    correct = np.zeros(600, bool)  # the vectors' top-1s are all wrong ...
    served = ServedTop1(drop_pos=np.full(600, 0.05), drop_neg=np.zeros(600),
                        inliers_pos=np.full(600, 45), inliers_neg=rng.poisson(3, 600), correct=np.ones(600, bool))
    served.inliers_neg[:60] = 25  # ... and 10% of no-origin queries fit a look-alike by 25
    bg = BackgroundSet(np.eye(4, dtype=np.float32), "m", k=1, match_margin=margin_for(neg, 0.03))
    choose_verification(bg, pos, neg, correct, inliers_pos, inliers_neg, 0.03, served)
    assert 25 < bg.verify_inliers <= 45
    assert bg.calibration["verified: correct positives declared"] > 0.9
    assert bg.calibration["verified: false-match rate"] <= 0.03
    plain = BackgroundSet(np.eye(4, dtype=np.float32), "m", k=1, match_margin=margin_for(neg, 0.03))
    choose_verification(plain, pos, neg, correct, inliers_pos, inliers_neg, 0.03)
    assert plain.verify_inliers == 0  # without the ranking nothing right is ever declared
