"""How the open-set rule is chosen from calibration scores (``training.calibrate_open_set``).

The calibration embeds and verifies; this module only decides, from the saved scores, so a
new target or a new way of choosing reruns in seconds (``--redecide``). Each choice follows
one principle: at the target false-match rate on the calibration negatives, declare the
most right positives, and where the data barely tell two rules apart (within one standard
error) keep the one that asks more of the evidence, since it carries better to images the
calibration never saw.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from origin_id.indexer.open_set import BackgroundSet


def margin_for(negative_margins: np.ndarray, target_fpr: float) -> float:
    """The smallest margin with at most ``target_fpr`` of the negatives at or above it."""
    ordered = np.sort(negative_margins)[::-1]
    allowed = int(np.floor(target_fpr * len(ordered)))
    return float(ordered[allowed] + 1e-4) if allowed < len(ordered) else float(ordered[-1])


def coverage_or_zeros(coverage: np.ndarray | None, n: int) -> np.ndarray:
    """Measured coverage, or zeros for scores saved before it was measured (clause off)."""
    return coverage if coverage is not None else np.zeros(n, np.float32)


WEIGHTS = np.round(np.arange(0.0, 1.01, 0.1), 1)


def decide(bg: BackgroundSet, scores: dict[str, np.ndarray], target_fpr: float, raw_threshold: float) -> None:
    """Set the background weight and the margin for ``target_fpr``: of the weights in
    ``WEIGHTS`` (0 = the raw score, 1 = the plain margin), the largest one that declares
    about as many right positives at that rate as the best; record the rates it gives,
    beside the raw threshold's and the trade-off at other rates."""
    # The saved margins are those of weight 1: top-1 score less the k-th background similarity.
    kth_pos = scores["score_pos"] - scores["margin_pos"]
    kth_neg = scores["score_neg"] - scores["margin_neg"]
    correct = scores["correct"]

    def rule(weight: float) -> tuple[np.ndarray, np.ndarray]:
        return scores["score_pos"] - weight * kth_pos, scores["score_neg"] - weight * kth_neg

    def declared(weight: float, fpr: float) -> float:
        pos, neg = rule(weight)
        return float(((pos >= margin_for(neg, fpr)) & correct).mean())

    by_weight = {float(w): declared(float(w), target_fpr) for w in WEIGHTS}
    # The largest weight within one standard error of the best: when the data barely tell
    # the weights apart, the normalisation that carries to unseen images is kept.
    best = max(by_weight.values())
    standard_error = np.sqrt(best * (1 - best) / len(correct))
    weight = max(w for w, rate in by_weight.items() if rate >= best - standard_error)
    pos, neg = rule(weight)
    margin = margin_for(neg, target_fpr)
    tradeoff = {}
    for fpr in (0.01, 0.02, 0.05, 0.1):
        for name, w in (("raw", 0.0), ("margin", 1.0), ("chosen weight", weight)):
            tradeoff[f"{name} at {fpr:.0%} false matches: correct positives declared"] = round(declared(w, fpr), 3)
    bg.weight, bg.match_margin = weight, margin
    bg.verify_inliers, bg.verify_margin, bg.verify_coverage = 0, 0.0, float("inf")
    bg.calibration.update({
        "weight": weight, "match_margin": margin, "target_fpr": target_fpr, "top1_correct": float(correct.mean()),
        "correct positives declared, by weight": by_weight,
        "margin: false-match rate": float((neg >= margin).mean()),
        "margin: correct positives declared": float(((pos >= margin) & correct).mean()),
        "raw threshold: false-match rate": float((scores["score_neg"] >= raw_threshold).mean()),
        "raw threshold: correct positives declared": float(((scores["score_pos"] >= raw_threshold) & correct).mean()),
        "tradeoff": tradeoff, "date": time.strftime("%Y-%m-%d"),
    })
    if "inliers_pos" in scores:  # last: it may raise the margin, and records the one it keeps
        served = ServedTop1.of(scores) if "alt_inliers_pos" in scores else None
        top1s = Top1s.of(scores, pos, neg, correct)
        if served is not None:  # the ranking first: the decision is made on the top-1s it serves
            choose_ranking(bg, top1s, served)
            top1s = served.led(bg.rank_lead, top1s)
        choose_verification(bg, top1s, target_fpr)


INLIER_COUNTS = (8, 10, 12, 15, 20, 25, 30, 40, 50)
#: Coverage thresholds tried for the verified clause (inf: clause off).
COVERAGES = (float("inf"), 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)


@dataclasses.dataclass(frozen=True)
class Top1s:
    """What the decision rule sees of each calibration query's top-1: its margin, whether it
    is right (positives), its keypoint inliers and their coverage of the query."""

    pos: np.ndarray
    neg: np.ndarray
    correct: np.ndarray
    inliers_pos: np.ndarray
    inliers_neg: np.ndarray
    coverage_pos: np.ndarray | None = None  # None: not measured (calibrations before it)
    coverage_neg: np.ndarray | None = None

    def __post_init__(self) -> None:
        for side in ("pos", "neg"):
            coverage = coverage_or_zeros(getattr(self, f"coverage_{side}"), len(getattr(self, side)))
            object.__setattr__(self, f"coverage_{side}", coverage)

    @classmethod
    def of(cls, scores: dict[str, np.ndarray], pos: np.ndarray, neg: np.ndarray, correct: np.ndarray) -> Top1s:
        return cls(pos, neg, correct, scores["inliers_pos"], scores["inliers_neg"],
                   scores.get("coverage_pos"), scores.get("coverage_neg"))

    def declared(self, bg: BackgroundSet, side: str) -> np.ndarray:
        return np.array([bool(bg.decide(float(m), int(n), float(c))) for m, n, c in zip(
            getattr(self, side), getattr(self, f"inliers_{side}"), getattr(self, f"coverage_{side}"))], bool)


@dataclasses.dataclass(frozen=True)
class ServedTop1:
    """Each query's best-verified candidate (``best_verified``), which the service ranks first
    when it fits by the ranking lead more inliers than the top-1 by score."""

    drop_pos: np.ndarray  # top-1 score less the candidate's
    drop_neg: np.ndarray
    inliers_pos: np.ndarray
    inliers_neg: np.ndarray
    correct: np.ndarray
    coverage_pos: np.ndarray | None = None
    coverage_neg: np.ndarray | None = None

    @classmethod
    def of(cls, scores: dict[str, np.ndarray]) -> ServedTop1:
        return cls(scores["alt_drop_pos"], scores["alt_drop_neg"], scores["alt_inliers_pos"],
                   scores["alt_inliers_neg"], scores["alt_correct"], scores.get("alt_coverage_pos"),
                   scores.get("alt_coverage_neg"))

    def led(self, lead: int, top1s: Top1s) -> Top1s:
        """The top-1s the service serves (``candidates.rank``): a query's best-verified
        candidate where it fits by ``lead`` inliers more than the top-1 by score does, the
        top-1 by score elsewhere."""
        up_pos = self.inliers_pos >= np.maximum(top1s.inliers_pos, 0) + lead
        up_neg = self.inliers_neg >= np.maximum(top1s.inliers_neg, 0) + lead
        cover_pos = coverage_or_zeros(self.coverage_pos, len(up_pos))
        cover_neg = coverage_or_zeros(self.coverage_neg, len(up_neg))
        return Top1s(top1s.pos - np.where(up_pos, self.drop_pos, 0), top1s.neg - np.where(up_neg, self.drop_neg, 0),
                     np.where(up_pos, self.correct, top1s.correct),
                     np.where(up_pos, self.inliers_pos, top1s.inliers_pos),
                     np.where(up_neg, self.inliers_neg, top1s.inliers_neg),
                     np.where(up_pos, cover_pos, top1s.coverage_pos), np.where(up_neg, cover_neg, top1s.coverage_neg))


def choose_verification(bg: BackgroundSet, top1s: Top1s, target_fpr: float) -> None:
    """Margin, inlier count, verified margin and coverage together: for each count in
    ``INLIER_COUNTS``, verified margin among the negatives' margin quantiles (0, 5%, ...,
    95%) and coverage in ``COVERAGES``, the smallest margin that keeps both ways to a match
    within ``target_fpr`` of the negatives, and the right positives each rule declares.
    When the data barely tell rules apart, the one that carries to unseen images is kept,
    as for the weight: the coverage clause only when the best rule with it declares more
    than the best without it by over one standard error; then the largest count within one
    standard error of the best (a higher count asks more evidence); the margin alone unless
    that rule beats it. ``top1s``: those the service serves (``ServedTop1.led``)."""
    allowed = int(np.floor(target_fpr * len(top1s.neg)))
    margin_only_margin = bg.match_margin
    margin_only = float(((top1s.pos >= bg.match_margin) & top1s.correct).mean())
    found: dict[tuple[bool, int], tuple[float, int, float, float, float]] = {}  # (clause, count): best rule
    for count in INLIER_COUNTS:
        for verify_margin in np.unique(np.quantile(top1s.neg, np.arange(0.0, 1.0, 0.05))):
            for coverage in COVERAGES:
                verified = (top1s.inliers_neg >= count) & (
                    (top1s.neg >= verify_margin) | (top1s.coverage_neg >= coverage))
                left = allowed - int(verified.sum())
                if left < 0:
                    continue
                rest = np.sort(top1s.neg[~verified])[::-1]
                margin = float(rest[left] + 1e-4) if left < len(rest) else float(rest[-1])
                declared = (top1s.pos >= margin) | ((top1s.inliers_pos >= count) & (
                    (top1s.pos >= verify_margin) | (top1s.coverage_pos >= coverage)))
                rate = float((declared & top1s.correct).mean())
                slot = (not np.isinf(coverage), count)
                if slot not in found or rate > found[slot][0]:
                    found[slot] = (rate, count, float(verify_margin), margin, float(coverage))

    def error(rate: float) -> float:
        return float(np.sqrt(rate * (1 - rate) / len(top1s.pos)))

    best = {clause: max((r[0] for (c, _), r in found.items() if c == clause), default=0.0) for clause in (False, True)}
    clause = best[True] > best[False] + error(best[False])
    steady = max((r for (c, _), r in found.items() if c == clause and r[0] >= best[clause] - error(best[clause])),
                 key=lambda r: r[1], default=None)
    chosen = steady if steady is not None and steady[0] > margin_only else \
        (margin_only, 0, 0.0, bg.match_margin, float("inf"))
    rate, count, verify_margin, margin, coverage = chosen
    bg.verify_inliers, bg.verify_margin, bg.match_margin, bg.verify_coverage = count, verify_margin, margin, coverage
    bg.calibration.update({
        "verify_inliers": count, "verify_margin": verify_margin, "verify_coverage": coverage, "match_margin": margin,
        "margin alone": margin_only_margin,
        "verified: false-match rate": float(top1s.declared(bg, "neg").mean()),
        "verified: correct positives declared": rate,
        "margin alone: correct positives declared": margin_only,
        "without a coverage clause: correct positives declared": best[False],
        "inliers, correct positives median / negatives p95": [
            float(np.median(top1s.inliers_pos[top1s.correct])) if top1s.correct.any() else float("nan"),
            float(np.quantile(top1s.inliers_neg, 0.95))],
    })


def choose_ranking(bg: BackgroundSet, plain: Top1s, served: ServedTop1) -> None:
    """The inlier lead that ranks a candidate first (``candidates.rank``): of
    ``INLIER_COUNTS``, the largest whose right top-1s (positives) are within one paired
    standard error of the best lead's (the square root of the queries the two answer
    differently, over all queries), so that a lead low enough to let chance fits re-rank
    is not chosen for a gain the data cannot show."""
    right = {lead: served.led(lead, plain).correct for lead in INLIER_COUNTS}
    best = max(INLIER_COUNTS, key=lambda lead: (right[lead].mean(), lead))
    bg.rank_lead = max(lead for lead in INLIER_COUNTS if right[lead].mean() >= right[best].mean() - np.sqrt(
        (right[lead] != right[best]).sum()) / len(plain.pos))
    by_lead = {lead: round(float(r.mean()), 4) for lead, r in right.items()}
    bg.calibration.update({"rank_lead": bg.rank_lead, "top-1 by score: right": round(float(plain.correct.mean()), 4),
                           "top-1 right, by ranking lead": by_lead})
