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
from typing import NamedTuple

import numpy as np

from origin_id.indexer.open_set import BackgroundSet


def margin_for(negative_margins: np.ndarray, target_fpr: float) -> float:
    """The smallest margin with at most ``target_fpr`` of the negatives at or above it."""
    ordered = np.sort(negative_margins)[::-1]
    allowed = int(np.floor(target_fpr * len(ordered)))
    return float(ordered[allowed] + 1e-4) if allowed < len(ordered) else float(ordered[-1])


def or_zeros(measured: np.ndarray | None, n: int) -> np.ndarray:
    """Measured values (coverage, agreement), or zeros for scores saved before they were
    measured: the clause that reads them then declares nothing."""
    return measured if measured is not None else np.zeros(n, np.float32)


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
#: Agreements tried for the agreement clause (``local_features.agreement``).
AGREEMENTS = (0.85, 0.9, 0.93, 0.95, 0.97, 0.99)


class Rule(NamedTuple):
    """A decision rule ``choose_verification`` weighs, with the right positives it declares."""

    rate: float
    count: int  # verified clause: inliers (0: off), margin, coverage (inf: no coverage clause)
    verify_margin: float
    margin: float
    coverage: float
    dense_count: int  # agreement clause: inliers (0: off) and agreement
    agreement: float

    @property
    def dense(self) -> bool:
        return bool(self.dense_count)

    @property
    def clause(self) -> bool:
        return not np.isinf(self.coverage)


@dataclasses.dataclass(frozen=True)
class Top1s:
    """What the decision rule sees of each calibration query's top-1: its margin, whether it
    is right (positives), its keypoint inliers, their coverage of the query and the pixels'
    agreement."""

    pos: np.ndarray
    neg: np.ndarray
    correct: np.ndarray
    inliers_pos: np.ndarray
    inliers_neg: np.ndarray
    coverage_pos: np.ndarray | None = None  # None: not measured (calibrations before it)
    coverage_neg: np.ndarray | None = None
    agreement_pos: np.ndarray | None = None
    agreement_neg: np.ndarray | None = None

    def __post_init__(self) -> None:
        for side in ("pos", "neg"):
            for measure in ("coverage", "agreement"):
                name = f"{measure}_{side}"
                object.__setattr__(self, name, or_zeros(getattr(self, name), len(getattr(self, side))))

    @classmethod
    def of(cls, scores: dict[str, np.ndarray], pos: np.ndarray, neg: np.ndarray, correct: np.ndarray) -> Top1s:
        return cls(pos, neg, correct, scores["inliers_pos"], scores["inliers_neg"],
                   scores.get("coverage_pos"), scores.get("coverage_neg"),
                   scores.get("agreement_pos"), scores.get("agreement_neg"))

    def declared(self, bg: BackgroundSet, side: str) -> np.ndarray:
        return np.array([bool(bg.decide(float(m), int(n), float(c), float(a))) for m, n, c, a in zip(
            getattr(self, side), getattr(self, f"inliers_{side}"), getattr(self, f"coverage_{side}"),
            getattr(self, f"agreement_{side}"))], bool)


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
    agreement_pos: np.ndarray | None = None
    agreement_neg: np.ndarray | None = None

    @classmethod
    def of(cls, scores: dict[str, np.ndarray]) -> ServedTop1:
        return cls(scores["alt_drop_pos"], scores["alt_drop_neg"], scores["alt_inliers_pos"],
                   scores["alt_inliers_neg"], scores["alt_correct"], scores.get("alt_coverage_pos"),
                   scores.get("alt_coverage_neg"), scores.get("alt_agreement_pos"), scores.get("alt_agreement_neg"))

    def led(self, lead: int, top1s: Top1s) -> Top1s:
        """The top-1s the service serves (``candidates.rank``): a query's best-verified
        candidate where it fits by ``lead`` inliers more than the top-1 by score does, the
        top-1 by score elsewhere."""
        up_pos = self.inliers_pos >= np.maximum(top1s.inliers_pos, 0) + lead
        up_neg = self.inliers_neg >= np.maximum(top1s.inliers_neg, 0) + lead

        def served(side: str, measure: str) -> np.ndarray:
            up = up_pos if side == "pos" else up_neg
            return np.where(up, or_zeros(getattr(self, f"{measure}_{side}"), len(up)),
                            getattr(top1s, f"{measure}_{side}"))

        return Top1s(top1s.pos - np.where(up_pos, self.drop_pos, 0), top1s.neg - np.where(up_neg, self.drop_neg, 0),
                     np.where(up_pos, self.correct, top1s.correct),
                     *(served(side, m) for m in ("inliers", "coverage", "agreement") for side in ("pos", "neg")))


def choose_verification(bg: BackgroundSet, top1s: Top1s, target_fpr: float) -> None:
    """Margin, inlier count, verified margin, coverage and the agreement clause together:
    for each verified clause (off, or a count in ``INLIER_COUNTS``, a verified margin among
    the negatives' margin quantiles (0, 5%, ...) and a coverage in ``COVERAGES``) and
    agreement clause (off, or a count of ``INLIER_COUNTS`` with an agreement of
    ``AGREEMENTS``), but not both off, the smallest margin that keeps
    every way to a match within ``target_fpr`` of the negatives, and the right positives
    each rule declares. When the data barely tell rules apart, the one that carries to
    unseen images is kept, as for the weight: a clause (agreement, then coverage) only when
    the best rule with it declares more than the best without it by over one standard
    error; then, of the rules within one standard error of the best, the largest count
    (a higher count asks more evidence), then the largest count and agreement of the
    agreement clause; the margin alone unless that rule beats it. ``top1s``: those the
    service serves (``ServedTop1.led``)."""
    allowed = int(np.floor(target_fpr * len(top1s.neg)))
    margin_only_margin = bg.match_margin
    margin_only = float(((top1s.pos >= bg.match_margin) & top1s.correct).mean())
    # Agreement clauses (count, agreement, negatives declared, positives declared); first: off.
    dense = [(0, float("inf"), np.zeros(len(top1s.neg), bool), np.zeros(len(top1s.pos), bool))]
    for count in INLIER_COUNTS:
        for agreement in AGREEMENTS:
            neg = (top1s.inliers_neg >= count) & (top1s.agreement_neg >= agreement)
            if neg.sum() <= allowed:
                dense.append((count, agreement, neg, (top1s.inliers_pos >= count) & (top1s.agreement_pos >= agreement)))
    # The best rule (over verified margins and coverages) by coverage clause on, count and agreement clause.
    found: dict[tuple[bool, int, int, float], Rule] = {}
    # Verified clauses (count, verified margin, coverage); first: off (the agreement clause alone).
    verified = [(0, float("inf"), float("inf"))] + [
        (count, float(verify_margin), coverage) for count in INLIER_COUNTS
        for verify_margin in np.unique(np.quantile(top1s.neg, np.arange(0.0, 1.0, 0.05))) for coverage in COVERAGES]
    for count, verify_margin, coverage in verified:
        verified_neg = (top1s.inliers_neg >= count) & ((top1s.neg >= verify_margin) | (top1s.coverage_neg >= coverage))
        verified_pos = (top1s.inliers_pos >= count) & ((top1s.pos >= verify_margin) | (top1s.coverage_pos >= coverage))
        for dense_count, agreement, dense_neg, dense_pos in dense:
            taken = verified_neg | dense_neg
            left = allowed - int(taken.sum())
            if left < 0 or not (count or dense_count):
                continue
            rest = np.sort(top1s.neg[~taken])[::-1]
            margin = float(rest[left] + 1e-4) if left < len(rest) else float(rest[-1])
            declared = (top1s.pos >= margin) | verified_pos | dense_pos
            rate = float((declared & top1s.correct).mean())
            rule = Rule(rate, count, verify_margin, margin, coverage, dense_count, agreement)
            slot = (rule.clause, count, dense_count, agreement)
            if slot not in found or rate > found[slot].rate:
                found[slot] = rule

    def error(rate: float) -> float:
        return float(np.sqrt(rate * (1 - rate) / len(top1s.pos)))

    def best(**fixed: bool) -> float:
        return max((r.rate for r in found.values() if all(getattr(r, k) == v for k, v in fixed.items())), default=0.0)

    with_dense = best(dense=True) > best(dense=False) + error(best(dense=False))
    clause = best(dense=with_dense, clause=True) > best(dense=with_dense, clause=False) + error(
        best(dense=with_dense, clause=False))
    top = best(dense=with_dense, clause=clause)
    near = [r for r in found.values() if (r.dense, r.clause) == (with_dense, clause) and r.rate >= top - error(top)]
    steady = max(near, key=lambda r: (r.count, r.dense_count, r.agreement), default=None)
    chosen = steady if steady is not None and steady.rate > margin_only else \
        Rule(margin_only, 0, 0.0, bg.match_margin, float("inf"), 0, float("inf"))
    rate, count, verify_margin, margin, coverage, dense_count, agreement = chosen
    bg.verify_inliers, bg.verify_margin, bg.match_margin, bg.verify_coverage = count, verify_margin, margin, coverage
    bg.dense_inliers, bg.dense_agreement = dense_count, agreement
    bg.calibration.update({
        "verify_inliers": count, "verify_margin": verify_margin, "verify_coverage": coverage, "match_margin": margin,
        "dense_inliers": dense_count, "dense_agreement": agreement,
        "margin alone": margin_only_margin,
        "verified: false-match rate": float(top1s.declared(bg, "neg").mean()),
        "verified: correct positives declared": rate,
        "margin alone: correct positives declared": margin_only,
        "without an agreement clause: correct positives declared": best(dense=False),
        "without a coverage clause: correct positives declared": best(dense=with_dense, clause=False),
        "inliers, correct positives median / negatives p95": [
            float(np.median(top1s.inliers_pos[top1s.correct])) if top1s.correct.any() else float("nan"),
            float(np.quantile(top1s.inliers_neg, 0.95))],
        "agreement of fits with 8+ inliers, correct positives median / negatives p95": [
            float(np.median(top1s.agreement_pos[top1s.correct & (top1s.inliers_pos >= 8)]))
            if (top1s.correct & (top1s.inliers_pos >= 8)).any() else float("nan"),
            float(np.quantile(top1s.agreement_neg[top1s.inliers_neg >= 8], 0.95))
            if (top1s.inliers_neg >= 8).any() else float("nan")],
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
