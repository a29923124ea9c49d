"""The match threshold of a trained W."""

import numpy as np

from training.calibrate_transform import threshold_for_precision


def test_threshold_reaches_the_target_precision():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.8, 0.1, 900), rng.normal(0.4, 0.1, 300)])
    truth = np.concatenate([np.ones(900, bool), np.zeros(300, bool)])
    report = threshold_for_precision(scores, truth, 0.95)
    declared = scores >= report["threshold"]
    assert (declared & truth).sum() / declared.sum() >= 0.95
    # The lowest such threshold: one step lower and precision would fall under target (or nothing changes).
    lower = scores[scores < report["threshold"]].max()
    below = scores >= lower
    assert (below & truth).sum() / below.sum() < 0.95 or below.sum() == declared.sum() + 1
    assert report["recall_at_threshold"] > 0.8
    assert report["decision_accuracy"] == (declared == truth).mean()
