"""Calibrate the match threshold of an ID2 transform the way the service queries.

    python -m training.calibrate_transform --transform .data/runs/transform.safetensors

The threshold is a cosine score: at or above it the top candidate is called
the origin. It is chosen on data no model trained on (the *val* photo split,
``training.data.split_of``, and procedural scenes from their own seed range):

* a gallery of val-photo tiles (hard negatives of each other) and procedural
  scenes;
* positives: edited copies (the training edit distribution,
  ``random_seen_edit``) of gallery images;
* negatives: edited copies of images that are *not* in the gallery.

Every query is scored exactly as ``OriginIndex.identify`` scores it: the best
score over its views (``origin_id.indexer.query_views``: the query, borders trimmed,
mirrored). The lowest threshold whose declared matches reach
``--target-precision`` (95%) is written into the transform file with the
figures measured, so the service reports a calibrated ``match``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from origin_id.indexer.config import Settings
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.model_bundle import ModelBundle
from origin_id.indexer.query_views import query_views
from origin_id.indexer.transform import LinearTransform
from training.data import allowed_photos, photo_tiles, photos_in_split, procedural_image
from training.edits import random_seen_edit


def threshold_for_precision(scores: np.ndarray, is_true_match: np.ndarray, target: float) -> dict:
    """The lowest score threshold whose declared matches reach ``target`` precision, with its figures."""
    order = np.argsort(-scores)
    precision = np.cumsum(is_true_match[order]) / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= target)
    threshold = float(scores[order][ok[-1]]) if len(ok) else float(scores.max() + 1e-6)
    declared = scores >= threshold
    return {"threshold": threshold, "target_precision": target,
            "recall_at_threshold": float((declared & is_true_match).sum() / max(1, is_true_match.sum())),
            "decision_accuracy": float((declared == is_true_match).mean())}


def embed_queries(embedder: Embedder, queries: list[Image.Image], settings: Settings) -> list[np.ndarray]:
    """Per query, the embeddings of all its views (as the service makes them)."""
    out = []
    for q in tqdm(queries, desc="queries", unit="img", dynamic_ncols=True):
        out.append(embedder.embed(query_views(q, flip=settings.query_flip, trim=settings.query_trim)))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gallery", type=int, default=5000,
                   help="larger galleries raise the best score of a no-origin query; calibrate at scale")
    p.add_argument("--positives", type=int, default=800)
    p.add_argument("--negatives", type=int, default=600)
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=5)
    Settings.add_arguments(p, only=["vae", "transform", "device", "batch_size", "query_flip", "query_trim",
                                    "reference_regions"])
    args = p.parse_args(argv)
    # Calibration needs only the embedder: no inpainting models.
    settings = dataclasses.replace(Settings.from_args(args), inpainting=False)
    if not settings.transform:
        p.error("--transform names the file to calibrate (a run's; the bundled one changes only by "
                "make promote-transform)")
    transform_path = Path(settings.transform)
    rng = np.random.default_rng(args.seed)

    tiles = [t for photo in photos_in_split("val", allowed_photos()) for t in photo_tiles(photo)]
    rng.shuffle(tiles)
    outside_tiles, gallery_tiles = tiles[: len(tiles) // 4], tiles[len(tiles) // 4:]
    gallery = gallery_tiles + [procedural_image(5_000_000 + i, size=320)
                               for i in range(max(0, args.gallery - len(gallery_tiles)))]
    outside = outside_tiles + [procedural_image(6_000_000 + i, size=320)
                               for i in range(max(0, args.negatives - len(outside_tiles)))]
    truth = rng.choice(len(gallery), args.positives, replace=False)
    queries = [random_seen_edit(gallery[j], rng) for j in truth]
    queries += [random_seen_edit(im, rng) for im in outside[: args.negatives]]

    bundle = ModelBundle.load(settings)
    embedder = Embedder(bundle, settings.batch_size, settings.region_layout)
    # References are indexed whole and by their regions: a gallery image scores its best row.
    g = np.concatenate([embedder.reference_vectors(gallery[i:i + 64])
                        for i in tqdm(range(0, len(gallery), 64), desc="gallery", unit="x64", dynamic_ncols=True)])
    per_image = g.shape[1]
    g = g.reshape(-1, g.shape[-1])
    best_scores, best_ids = [], []
    for views in embed_queries(embedder, queries, settings):
        sim = (views @ g.T).max(0).reshape(-1, per_image).max(1)
        best_ids.append(int(sim.argmax()))
        best_scores.append(float(sim.max()))
    scores, top = np.array(best_scores), np.array(best_ids)
    n_pos = len(truth)
    is_true = np.zeros(len(queries), bool)
    is_true[:n_pos] = top[:n_pos] == truth
    report = threshold_for_precision(scores, is_true, args.target_precision)
    report.update({"top1": float(is_true[:n_pos].mean()), "positives": n_pos, "negatives": len(queries) - n_pos,
                   "gallery": len(gallery), "views": f"flip={settings.query_flip}, trim={settings.query_trim}",
                   "reference regions": len(embedder.layout),
                   "data": "val photo split tiles + procedural scenes (seeds 5e6+/6e6+), seen edit distribution"})
    print("calibration:", json.dumps(report))
    transform = LinearTransform.load(transform_path)
    transform.config.match_threshold = report["threshold"]
    transform.config.calibration = report
    transform.save(transform_path)
    print(f"wrote threshold {report['threshold']:.4f} into {transform_path}")


if __name__ == "__main__":
    main()
