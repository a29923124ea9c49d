"""Origin candidates: how the vectors score them and how verification ranks them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from origin_id.indexer.store import Reference


@dataclass(frozen=True)
class Candidate:
    reference: Reference
    score: float
    #: Keypoint inliers with the query (``origin_id.indexer.local_features``); -1 = not verified.
    inliers: int = -1
    #: The share of the query's area those inliers span (``local_features.Fit``).
    coverage: float = 0.0
    #: How well the query's pixels agree with the reference's under that fit (``local_features.agreement``).
    agreement: float = 0.0


def scored(vectors: np.ndarray, live: dict[int, tuple[Reference, np.ndarray]]) -> list[Candidate]:
    """One candidate per reference of ``live`` (stored vectors by embedding id), with its best
    score over the query's views and its vectors, best first."""
    best: dict[int, Candidate] = {}
    for ref, stored in live.values():
        score = float((vectors @ stored).max())
        if ref.id not in best or score > best[ref.id].score:
            best[ref.id] = Candidate(ref, score)
    return sorted(best.values(), key=lambda c: -c.score)


def rank(candidates: list[Candidate], found: list[Candidate], lead: int) -> list[Candidate]:
    """``candidates`` (by score) with the verified ones first: those that fit the query by at
    least ``lead`` more keypoint inliers than the top-1 by score does (calibrated,
    ``BackgroundSet.ranking_lead``; 0 = no ranking), by inliers, whether the vectors or the
    keypoint index (``found``) brought them. A copy that moved its picture (a crop, a tilt,
    a frame) scores low by its vectors and fits its origin by many keypoints; a look-alike
    that scores high fits few. A lead, not a count: between two candidates that both fit
    (near-duplicates: a texture and its variant, neighbouring crops of one picture), a few
    inliers more are noise and the vectors' order stands. ``found`` candidates that are not
    ranked are dropped; the list keeps its length."""
    if not lead or not candidates:
        return candidates
    bar = max(candidates[0].inliers, 0) + lead
    strong = sorted((c for c in [*candidates, *found] if c.inliers >= bar), key=lambda c: (-c.inliers, -c.score))
    chosen = {c.reference.id for c in strong}
    return [*strong, *(c for c in candidates if c.reference.id not in chosen)][:len(candidates)]
