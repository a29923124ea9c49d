"""Scoring and ranking candidates (``indexer/candidates.py``)."""

from datetime import datetime, timezone

import numpy as np

from origin_id.indexer.candidates import Candidate, rank, scored
from origin_id.indexer.store import Reference


def ref(i: int) -> Reference:
    return Reference(i, "default", f"r{i}", "", "0" * 64, 64, 64, {}, datetime.now(timezone.utc))


def test_each_reference_scores_its_best_view_against_its_best_vector():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # two views of the query
    live = {10: (ref(1), np.array([0.6, 0.8], np.float32)), 11: (ref(1), np.array([0.0, 0.9], np.float32)),
            12: (ref(2), np.array([0.7, 0.1], np.float32))}
    out = scored(vectors, live)
    assert [(c.reference.id, round(c.score, 3)) for c in out] == [(1, 0.9), (2, 0.7)]


def test_candidates_that_out_fit_the_top_1_by_the_lead_rank_first_and_the_rest_keep_their_order():
    by_score = [Candidate(ref(1), 0.9, 3), Candidate(ref(2), 0.8, 45), Candidate(ref(3), 0.7, -1)]
    found = [Candidate(ref(4), 0.4, 60), Candidate(ref(5), 0.5, 10)]
    out = rank(by_score, found, 40)
    assert [c.reference.id for c in out] == [4, 2, 1]  # same length; 5 does not lead, dropped
    assert rank(by_score, found, 0) == by_score  # no calibrated lead: no ranking
    assert rank(by_score, [], 50) == by_score  # nothing leads the top-1 by 50
    tie = rank(by_score, [Candidate(ref(4), 0.4, 45), Candidate(ref(5), 0.6, 45)], 40)
    assert [c.reference.id for c in tie] == [2, 5, 4]  # equal inliers: the higher score first


def test_a_lead_is_counted_from_the_top_1s_own_inliers():
    """A near-duplicate that fits a few inliers more than a right top-1 that fits too does not
    overtake it; a candidate that fits where the top-1 fits nothing does, unverified top-1 or not."""
    near = [Candidate(ref(1), 0.9, 39), Candidate(ref(2), 0.8, 45)]
    assert [c.reference.id for c in rank(near, [], 8)] == [1, 2]
    assert [c.reference.id for c in rank(near, [], 6)] == [2, 1]
    lifted = rank([Candidate(ref(1), 0.9, -1), Candidate(ref(2), 0.5, 2)], [Candidate(ref(3), 0.3, 11)], 8)
    assert [c.reference.id for c in lifted] == [3, 1]
