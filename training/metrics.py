"""Scores the training code and the benchmarks share (one definition, so a checkpoint chosen
by validation AUC is chosen by the figure the benchmark reports)."""

from __future__ import annotations

import numpy as np


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC of positive scores against negative ones (ties count half)."""
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def pixel_scores(pred: np.ndarray | None, truth: np.ndarray) -> tuple[float, float]:
    """F1 and IoU of one predicted mask (None = nothing marked)."""
    pred = np.zeros_like(truth) if pred is None else pred
    tp = float((pred & truth).sum())
    fp, fn = float((pred & ~truth).sum()), float((~pred & truth).sum())
    f1 = 2 * tp / max(2 * tp + fp + fn, 1.0)
    iou = tp / max(tp + fp + fn, 1.0)
    return f1, iou
