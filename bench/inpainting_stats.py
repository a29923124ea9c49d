"""The inpainting benchmark's statistics: detection scores and the photo bootstrap
(``bench/inpainting.py``)."""

from __future__ import annotations

import numpy as np

from bench.identify import micro_ap
from training.metrics import roc_auc


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    labels = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    return micro_ap(np.concatenate([pos, neg]), labels, len(pos))[0]


def tpr_at_fpr(pos: np.ndarray, neg: np.ndarray, fpr: float = 0.05) -> float:
    cut = np.quantile(neg, 1 - fpr, method="higher")
    return float((pos > cut).mean())


def detection_scores(pos: np.ndarray, neg: np.ndarray, threshold: float) -> dict[str, float]:
    return {"auc": roc_auc(pos, neg), "ap": average_precision(pos, neg), "tpr_at_5fpr": tpr_at_fpr(pos, neg),
            "tpr_at_threshold": float((pos >= threshold).mean()),
            "fpr_at_threshold": float((neg >= threshold).mean())}


def photo_redraws(photos: int, rounds: int = 2000, seed: int = 0) -> np.ndarray:
    """(rounds, photos) counts: how often each test photo is drawn in each redraw of as
    many photos as there are, with replacement (the photo bootstrap's draws)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(photos, np.full(photos, 1 / photos), size=rounds).astype(float)


def redrawn_aucs(pos: np.ndarray, pos_photo: np.ndarray, neg: np.ndarray, neg_photo: np.ndarray,
                 counts: np.ndarray) -> np.ndarray:
    """The AUC in each redraw of ``counts`` (``photo_redraws``; photo i is column i), every
    drawn photo bringing all of its positives and negatives, as often as it was drawn; NaN
    for a redraw with no positive or no negative.

    A photo's samples share its content, so they are not independent draws: with 20
    photos, which photos were drawn moves an AUC more than which crops were cut from
    them (per-photo AUCs range 0.83-0.99). The pairwise comparisons are summed per pair of
    photos once (``wins[a, b]``: positives of photo a over negatives of photo b, ties
    half), so a redraw costs two small products."""
    n = counts.shape[1]
    if max(pos_photo.max(initial=-1), neg_photo.max(initial=-1)) >= n:
        raise ValueError(f"photo indices must be below {n}, the redraws' photo count")
    order = np.argsort(neg)
    sorted_neg, sorted_photo = neg[order], neg_photo[order]
    wins = np.zeros((n, n))
    for score, photo in zip(pos, pos_photo):
        below, upto = np.searchsorted(sorted_neg, score, "left"), np.searchsorted(sorted_neg, score, "right")
        np.add.at(wins[photo], sorted_photo[:below], 1.0)
        np.add.at(wins[photo], sorted_photo[below:upto], 0.5)
    pairs = (counts @ np.bincount(pos_photo, minlength=n)) * (counts @ np.bincount(neg_photo, minlength=n))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("ra,ab,rb->r", counts, wins, counts) / pairs


def redrawn_means(values: np.ndarray, photo: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean of per-sample ``values`` (a pixel F1 per inpainted image) in each redraw of
    ``counts`` (``photo_redraws``), every drawn photo bringing all of its samples; NaN for a
    redraw with none."""
    n = counts.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.bincount(photo, weights=values, minlength=n)) / (counts @ np.bincount(photo, minlength=n))


def photo_bootstrap_auc(pos: np.ndarray, pos_photo: np.ndarray, neg: np.ndarray, neg_photo: np.ndarray,
                        rounds: int = 2000, seed: int = 0, level: float = 0.95,
                        photos: int | None = None) -> tuple[float, float]:
    """The ``level`` range of the AUC when the test photos are drawn again (``redrawn_aucs``
    over ``rounds`` redraws of the ``photos`` photos, numbered 0..photos-1; by default as
    many as the highest number seen)."""
    photos = photos or int(max(pos_photo.max(), neg_photo.max())) + 1
    aucs = redrawn_aucs(pos, pos_photo, neg, neg_photo, photo_redraws(photos, rounds, seed))
    aucs = aucs[~np.isnan(aucs)]
    tail = (1 - level) / 2
    return float(np.quantile(aucs, tail)), float(np.quantile(aucs, 1 - tail))
