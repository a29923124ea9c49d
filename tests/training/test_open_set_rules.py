"""How the open-set rule is chosen from calibration scores (``training.open_set_rules``)."""

import numpy as np

from origin_id.indexer.open_set import BackgroundSet
from training.open_set_rules import ServedTop1, Top1s, choose_ranking, choose_verification, margin_for


def calibrated(top1s: Top1s, target=0.03) -> BackgroundSet:
    bg = BackgroundSet(np.eye(4, dtype=np.float32), "m", k=1, match_margin=margin_for(top1s.neg, target))
    choose_verification(bg, top1s, target)
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


def test_the_rule_is_judged_on_the_top_1s_the_ranking_serves():
    """Wrong top-1s whose origin the keypoints find (many inliers, lower score) count as right
    once the ranking serves them; no-origin queries whose best-verified candidate the ranking
    serves count as that candidate's matches, so a count low enough to reach look-alikes'
    fits is not chosen."""
    rng = np.random.default_rng(2)
    neg, inliers_neg = rng.normal(0.2, 0.1, 600), rng.poisson(3, 600)
    pos, inliers_pos = rng.normal(0.5, 0.05, 600), rng.poisson(3, 600)
    correct = np.zeros(600, bool)  # the vectors' top-1s are all wrong ...
    served = ServedTop1(drop_pos=np.full(600, 0.05), drop_neg=np.zeros(600),
                        inliers_pos=np.full(600, 45), inliers_neg=rng.poisson(3, 600), correct=np.ones(600, bool))
    served.inliers_neg[:60] = 25  # ... and 10% of no-origin queries fit a look-alike by 25
    top1s = Top1s(pos, neg, correct, inliers_pos, inliers_neg)
    bg = calibrated(served.led(15, top1s))
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


def test_an_agreement_clause_declares_crops_with_few_inliers_that_shared_parts_do_not_reach():
    """A third of the positives are crops of drawings: low margins, 12-35 inliers covering
    little. 8% of no-origin queries share a part with a gallery picture and fit it by as many
    inliers at as little coverage; only the pixels tell them apart (crops agree at >= 0.95,
    shared parts at <= 0.8). The clause is chosen, with a count the chance fits do not reach."""
    rng = np.random.default_rng(5)
    n = 600
    neg, inliers_neg = rng.normal(0.2, 0.1, n), rng.poisson(3, n)
    agreement_neg = rng.uniform(0.0, 0.6, n)
    inliers_neg[:48], agreement_neg[:48] = rng.integers(12, 36, 48), rng.uniform(0.5, 0.8, 48)
    pos = np.concatenate([rng.normal(0.7, 0.05, 400), rng.normal(0.2, 0.1, 200)])  # crops: margins as low
    inliers_pos = np.concatenate([rng.poisson(60, 400), rng.integers(12, 36, 200)])
    agreement_pos = np.concatenate([rng.uniform(0.8, 1.0, 400), rng.uniform(0.95, 1.0, 200)])
    low = np.full(n, 0.1)  # coverage: little, for crops and shared parts alike
    top1s = Top1s(pos, neg, np.ones(n, bool), inliers_pos, inliers_neg, low, low, agreement_pos, agreement_neg)
    bg = calibrated(top1s)
    assert 8 <= bg.dense_inliers <= 12 and 0.8 < bg.dense_agreement <= 0.95, (bg.dense_inliers, bg.dense_agreement)
    assert top1s.declared(bg, "neg").mean() <= 0.03
    assert top1s.declared(bg, "pos").mean() > 0.95
    assert bg.calibration["without an agreement clause: correct positives declared"] < 0.9
    # Agreement not measured (older scores): the clause stays off.
    blind = calibrated(Top1s(pos, neg, np.ones(n, bool), inliers_pos, inliers_neg, low, low))
    assert (blind.dense_inliers, blind.dense_agreement) == (0, float("inf"))


def test_ranking_lead_takes_the_origins_keypoints_find_and_leaves_near_ties_to_the_vectors():
    """30% of positives are crops whose vectors miss the origin and whose origin fits by 15-30
    inliers more than the top-1; 10% of the right top-1s have a wrong candidate fitting by
    chance at 10-11; another 10% fit by 30 and a near-duplicate of theirs by 33. The lead is
    the largest that takes all the crops and neither the chance fits nor the near-duplicates
    (15); a count would have lost the near-duplicates."""
    rng = np.random.default_rng(4)
    n = 600
    correct = np.arange(n) >= 180  # the first 180: the vectors' top-1 is wrong
    top1_inliers = np.zeros(n, int)
    alt_inliers = np.where(correct, rng.poisson(2, n), rng.integers(15, 31, n))
    alt_inliers[180:240] = rng.integers(10, 12, 60)  # chance fits beside right top-1s
    top1_inliers[240:300], alt_inliers[240:300] = 30, 33  # a variant of the origin fits as well
    served = ServedTop1(drop_pos=np.full(n, 0.3), drop_neg=np.full(n, 0.3), inliers_pos=alt_inliers,
                        inliers_neg=rng.integers(0, 14, n), correct=~correct)
    top1s = Top1s(rng.normal(0.6, 0.1, n), rng.normal(0.2, 0.1, n), correct, top1_inliers, rng.poisson(2, n))
    bg = BackgroundSet(np.eye(4, dtype=np.float32), "m", k=1)
    choose_ranking(bg, top1s, served)
    assert bg.rank_lead == 15 and bg.ranking_lead == 15
    assert bg.calibration["top-1 right, by ranking lead"][15] == 1.0
    assert bg.calibration["top-1 right, by ranking lead"][10] == 0.9
    assert np.where(alt_inliers >= 15, ~correct, correct).mean() == 0.9  # by a count: the variants win
