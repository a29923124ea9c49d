"""The open-set calibration's choice of a verification rule (``choose_verification``)."""

import numpy as np

from origin_id.indexer.open_set import BackgroundSet
from training.calibrate_open_set import ServedTop1, Top1s, choose_verification, margin_for


def calibrated(top1s: Top1s, target=0.03, served: ServedTop1 | None = None) -> BackgroundSet:
    bg = BackgroundSet(np.eye(4, dtype=np.float32), "m", k=1, match_margin=margin_for(top1s.neg, target))
    choose_verification(bg, top1s, target, served)
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
    top1s = Top1s(pos, neg, np.ones(600, bool), inliers_pos, inliers_neg)
    bg = calibrated(top1s)
    assert bg.verify_inliers > 0 and bg.verify_coverage == float("inf")  # coverage not measured: no clause
    assert top1s.declared(bg, "neg").mean() <= 0.03
    declared = top1s.declared(bg, "pos").mean()
    assert declared > bg.calibration["margin alone: correct positives declared"] + 0.3
    assert bg.calibration["verified: correct positives declared"] == declared
    # The look-alikes' margins (0.0) are kept below the verified margin.
    assert bg.verify_margin > 0.0


def test_uninformative_inliers_leave_the_margin_alone():
    rng = np.random.default_rng(1)
    neg, pos = rng.normal(0.2, 0.1, 600), rng.normal(0.5, 0.1, 600)
    bg = calibrated(Top1s(pos, neg, np.ones(600, bool), np.zeros(600, int), rng.poisson(3, 600)))
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
    top1s = Top1s(pos, neg, correct, inliers_pos, inliers_neg)
    bg = calibrated(top1s, served=served)
    assert 25 < bg.verify_inliers <= 45
    assert bg.calibration["verified: correct positives declared"] > 0.9
    assert bg.calibration["verified: false-match rate"] <= 0.03
    assert calibrated(top1s).verify_inliers == 0  # without the ranking nothing right is ever declared


def test_a_coverage_clause_declares_moved_copies_that_parts_shared_by_other_pictures_do_not_reach():
    """No-origin queries that share a part with a gallery picture fit it by many inliers
    inside that part (low coverage) at margins as high as crops'; crops fit their origin by
    many inliers spanning most of the query. Inliers and margin cannot tell them apart; the
    coverage can, and the clause is chosen because it pays for itself."""
    rng = np.random.default_rng(3)
    neg, inliers_neg = rng.normal(0.2, 0.1, 600), rng.poisson(3, 600)
    coverage_neg = rng.uniform(0.0, 0.2, 600)
    inliers_neg[:60], neg[:60] = 90, rng.normal(0.3, 0.05, 60)  # 10%: shared parts, well fitted
    pos = np.concatenate([rng.normal(0.7, 0.05, 300), rng.normal(0.3, 0.05, 300)])  # half: crops
    inliers_pos = np.concatenate([rng.poisson(60, 300), rng.poisson(90, 300)])
    coverage_pos = np.concatenate([rng.uniform(0.2, 0.6, 300), rng.uniform(0.35, 0.6, 300)])
    top1s = Top1s(pos, neg, np.ones(600, bool), inliers_pos, inliers_neg, coverage_pos, coverage_neg)
    bg = calibrated(top1s)
    assert 0.2 < bg.verify_coverage <= 0.35
    assert top1s.declared(bg, "neg").mean() <= 0.03
    assert top1s.declared(bg, "pos").mean() > 0.95
    assert bg.calibration["without a coverage clause: correct positives declared"] < 0.6
    # The same data without coverage measured: the clause stays off.
    blind = calibrated(Top1s(pos, neg, np.ones(600, bool), inliers_pos, inliers_neg))
    assert blind.verify_coverage == float("inf")
