"""Calibration of the inpainting models on the val split, and the outputs it reads.

* ``detector_outputs``: the probability the service serves, per sample (the query's and
  its mirror's logits averaged, plus the copy-move term when the detector has a weight);
* ``fit_copy_move_weight``: the weight of ``CopyMoveSearch`` scores in that verdict;
* ``calibrate_detector``: ``threshold`` and ``localize_threshold``;
* ``calibrate_pixel_threshold``: the localizer's mask cut.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from origin_id.detectors import detector as det
from origin_id.detectors import localizer as loc
from origin_id.detectors.copy_move import CopyMoveSearch
from origin_id.detectors.query_mask import upsample_probability
from training.detector_samples import batch_tensors, batches
from training.metrics import pixel_scores, roc_auc


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of scores against boolean labels, computed as the benchmark computes it."""
    labels = labels.astype(bool)
    return roc_auc(scores[labels], scores[~labels])


@torch.inference_mode()
def copy_move_scores(data) -> np.ndarray:
    """``CopyMoveSearch`` scores of every sample's 256 px view (the view the service searches)."""
    search = CopyMoveSearch()
    scores = []
    for idx in batches(data):
        x = torch.from_numpy(data["x"][idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
        scores.extend(e.score for e in search(x))
    return np.asarray(scores, np.float32)


@torch.inference_mode()
def detector_outputs(model: det.InpaintingDetector, data, lare, copy_move: np.ndarray | None = None) -> np.ndarray:
    """The probability the service serves (``verdict_logit``: query and mirror averaged, plus
    the copy-move term when the model has a weight for it) per sample. ``copy_move``: the
    samples' ``copy_move_scores``, if already at hand."""
    model.eval()
    if model.config.copy_move_weight and copy_move is None:
        copy_move = copy_move_scores(data)
    probs = []
    for idx in batches(data):
        x, err, lr, _, _ = batch_tensors(data, idx, lare)
        cm = torch.from_numpy(copy_move[idx]) if copy_move is not None else None
        probs.append(torch.sigmoid(model.verdict(x, err, lr, cm)[0]).numpy())
    return np.concatenate(probs)


def fit_copy_move_weight(model: det.InpaintingDetector, data, lare, n: int = 3000, seed: int = 0) -> None:
    """Set ``copy_move_weight``: logistic regression of the label on the network's verdict
    logit (coefficient held at 1) plus ``w * copy_move_evidence(score)`` (with the config's
    ``copy_move_floor``), on ``n`` training samples; w >= 0. Call ``calibrate_detector``
    afterwards: the threshold belongs to the fused verdict."""
    idx = np.sort(np.random.default_rng(seed).choice(len(data["label"]), min(n, len(data["label"])), replace=False))
    subset = {k: v[idx] for k, v in data.items()}
    model.config.copy_move_weight = 0.0
    p = np.clip(detector_outputs(model, subset, lare[idx]), 1e-6, 1 - 1e-6)
    logit = torch.tensor(np.log(p / (1 - p)), dtype=torch.float64)
    evidence = det.copy_move_evidence(torch.tensor(copy_move_scores(subset), dtype=torch.float64),
                                      model.config.copy_move_floor)
    labels = torch.tensor(subset["label"], dtype=torch.float64)
    wb = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([wb], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(logit + wb[0] * evidence + wb[1], labels)
        loss.backward()
        return loss

    opt.step(closure)
    weight = max(0.0, float(wb[0].detach()))
    model.config.copy_move_weight = round(weight, 3)
    model.config.training["copy_move"] = {
        "weight": round(weight, 3), "floor": model.config.copy_move_floor, "fit_samples": len(idx),
        "train_auc": {"network": round(auc(logit.numpy(), subset["label"]), 4),
                      "with copy-move": round(auc((logit + weight * evidence).numpy(), subset["label"]), 4)}}


@torch.inference_mode()
def localizer_conditions(model: det.InpaintingDetector, data, lare, mirrored: bool = False) -> np.ndarray:
    """The localizer's condition per sample; with ``mirrored``, that of the mirror image
    (in mirrored coordinates, as ``MaskDiffusionLocalizer.sample_mirrored`` takes it)."""
    model.eval()
    conds = []
    for idx in batches(data):
        x, err, lr, _, _ = batch_tensors(data, idx, lare)
        out = model.mirrored(x, err, lr) if mirrored else model(x, err, lr)
        conds.append(loc.localizer_condition(out.features, out.mask_logit, err.flip(-1) if mirrored else err)
                     .half().numpy())
    return np.concatenate(conds)


def calibrate_detector(model: det.InpaintingDetector, val, lare_val, scene_sets: dict | None = None) -> None:
    """Set ``threshold`` and ``localize_threshold`` from the val split.

    ``threshold``: the 96th percentile of the negatives' probabilities, taken for
    pristine and for globally edited photos separately (and for the negatives of
    each procedural scene set's val samples, ``scene_sets``: name -> (samples,
    LaRE maps)), the highest, so each group stays at or under ~4% false positives
    (the target is 5% for each). ``localize_threshold``: the 2nd percentile of the
    photo positives."""
    probs = detector_outputs(model, val, lare_val)
    labels = val["label"].astype(bool)
    edited = np.array([bool(json.loads(m)["global_edit"]) for m in val["meta"]])
    groups = {"pristine": ~labels & ~edited, "globally edited": ~labels & edited}
    negatives = {name: probs[g] for name, g in groups.items()}
    scene_outputs = {}
    for name, (data, lare) in (scene_sets or {}).items():
        scene_outputs[name] = detector_outputs(model, data, lare), data["label"].astype(bool)
        negatives[name] = scene_outputs[name][0][~scene_outputs[name][1]]
    threshold = max(float(np.quantile(p, 0.96)) for p in negatives.values())
    config = model.config
    config.threshold = threshold
    config.localize_threshold = float(min(np.quantile(probs[labels], 0.02), threshold))
    config.calibration = {
        "data": f"val photo split, {int(groups['pristine'].sum())} pristine and "
                f"{int(groups['globally edited'].sum())} globally edited negatives, "
                f"{int(labels.sum())} inpainted (seen masks and fills)",
        "rule": "threshold = the highest of the 96th percentiles of each negative group "
                "(<= 5% false positives on each, with margin); "
                "localize_threshold = 2nd percentile of photo positives",
        "val_auc": round(auc(probs, val["label"]), 4),
        "val_fpr": {name: round(float((p >= threshold).mean()), 4) for name, p in negatives.items()},
        "val_tpr": round(float((probs[labels] >= threshold).mean()), 4),
    }
    for name, (scene_probs, scene_labels) in scene_outputs.items():
        config.calibration["data"] += (f"; {name} val set, {int((~scene_labels).sum())} clean and "
                                       f"{int(scene_labels.sum())} inpainted samples")
        config.calibration[f"{name}_val_auc"] = round(auc(scene_probs, scene_labels), 4)


def calibrate_pixel_threshold(localizer: loc.MaskDiffusionLocalizer, cond: np.ndarray, mirrored_cond: np.ndarray,
                              val, candidates: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)):
    """``pixel_threshold`` = the cut of the averaged mask probability (query and mirror, as
    served) with the best mean F1 over the val split's inpainted samples (masks compared at
    256 px)."""
    pos = np.nonzero(val["label"])[0]

    def rows(c: np.ndarray, s: int) -> torch.Tensor:
        return torch.from_numpy(c[pos[s:s + 32]].astype(np.float32))
    probs = np.concatenate([localizer.sample_mirrored(rows(cond, s), rows(mirrored_cond, s)).float().numpy()[:, 0]
                            for s in range(0, len(pos), 32)])
    maps = [upsample_probability(p, (256, 256)) for p in probs]
    f1 = {c: float(np.mean([pixel_scores(m >= c, val["mask"][i])[0] for m, i in zip(maps, pos)]))
          for c in candidates}
    best = max(f1, key=f1.get)
    localizer.config.pixel_threshold = best
    localizer.config.calibration = {"data": f"val photo split, {len(pos)} inpainted (seen masks and fills)",
                                    "rule": "pixel_threshold with the best mean F1",
                                    "f1_by_threshold": {str(c): round(v, 4) for c, v in f1.items()}}

