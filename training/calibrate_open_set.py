"""Build the model's background set and calibrate its open-set match margin.

    python -m training.calibrate_open_set --out .data/runs/background.safetensors
    make promote-background           # copies it into indexer/default_model

Data: allowed Debian packages that no model of this project trains on (downloaded with
``apt-get download`` into ``--debs``), split by package so that no image serves two roles:

* background: ``tuxpaint-stamps-default``, ``extremetuxracer-data``, ``kstars-data`` and
  procedural scenes - images unrelated to any gallery, embedded as references are;
* calibration gallery: ``stellarium-data``, ``marble-data``, ``opencv-doc`` (one in eight
  of their images kept out, as no-origin material) topped up with procedural scenes to
  ``--gallery`` references.

Kept-out files that PDQ calls the same picture as a gallery file (``training.twins``)
are not used as negatives: their origin is in the gallery after all.

Queries are made with ``training.edits`` (the project's own edits; the held-out benchmark's
edits are never used here): positives are edited gallery images, negatives edited
images whose origin is not in the gallery. Each query is embedded with the service's
query views and scored exactly against the whole gallery, as ``OriginIndex`` does.
The margin is the smallest one whose false-match rate on the negatives is at most
``--target-fpr``; with geometric verification (each query's keypoint inliers with its
top-1, ``origin_id.indexer.local_features``) the margin, the inlier count and the
verified matches' own margin are chosen together, for the same rate over both ways to a
match; the file records the rates it measured and the trade-off at other
rates. The service ranks first a candidate verified by that inlier count (its top 5 and
the keypoint index's candidates, ``OriginIndex.rank``), so each count is judged on the
top-1 it would serve: each query's best-verified candidate is kept beside its top-1.
The scores are kept beside the file (``.scores.npz``): ``--redecide`` sets a new target
without embedding again.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from origin_id.indexer.config import Settings
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.keypoint_index import KeypointIndex
from origin_id.indexer.local_features import LocalFeatures, QueryFeatures, extract
from origin_id.indexer.model_bundle import ModelBundle
from origin_id.indexer.open_set import BackgroundSet
from origin_id.indexer.query_views import query_batch, trim_borders
from origin_id.indexer.store.feed import KeypointChunk
from training.data import package_images, procedural_image
from training.edits import FAMILIES, apply, random_seen_edit
from training.fetch_data import unpack_package
from training.twins import pdq_hashes, twins

BACKGROUND_PACKAGES = ["tuxpaint-stamps-default", "extremetuxracer-data", "kstars-data"]
CALIBRATION_PACKAGES = ["stellarium-data", "marble-data", "opencv-doc"]


def kept_out(im: Image.Image) -> bool:
    return hashlib.sha256(im.resize((16, 16)).tobytes()).digest()[0] % 8 == 0


def query_vectors(embedder: Embedder, images: list[Image.Image], settings: Settings) -> np.ndarray:
    """(q, views, dim): the service's query views of each image."""
    rows = []
    for im in tqdm(images, desc="query views", unit="query"):
        x = query_batch(im, flip=settings.query_flip, trim=settings.query_trim)
        rows.append(embedder.project(embedder.encode(x)))
    views = max(len(r) for r in rows)
    return np.stack([np.concatenate([r, np.repeat(r[:1], views - len(r), 0)]) for r in rows])


def similarities(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(q, n): each query (q, views, dim) against each gallery image (n, regions, dim), the
    best over the query's views and the image's regions, as ``OriginIndex.search`` scores."""
    return np.concatenate([np.einsum("qvd,nrd->qnvr", queries[s:s + 64], gallery).max(axis=(2, 3))
                           for s in range(0, len(queries), 64)])


def query_features(images: list[Image.Image], settings: Settings) -> list[QueryFeatures]:
    """Each query's keypoints as the service extracts them (with the picture inside its
    borders when ``query_trim`` finds one)."""
    return [QueryFeatures.of(im, trim_borders(im) if settings.query_trim else None)
            for im in tqdm(images, desc="query keypoints", unit="query")]


def best_verified(queries: list[QueryFeatures], sims: np.ndarray, gallery: list[LocalFeatures],
                  keypoints: KeypointIndex, verified: int = 5, voted: int = 10) -> dict[str, np.ndarray]:
    """Each query's candidate with the most keypoint inliers (ties: the higher score) among
    its ``verified`` best by score and the keypoint index's ``voted`` others, as the service
    verifies them: its gallery index, inliers, their coverage and score; and the inliers and
    coverage of the top-1 by score (``top1_inliers``, ``top1_coverage``)."""
    out = {"index": np.zeros(len(queries), np.int64), "inliers": np.zeros(len(queries), np.int32),
           "coverage": np.zeros(len(queries), np.float32), "score": np.zeros(len(queries), np.float32),
           "top1_inliers": np.zeros(len(queries), np.int32), "top1_coverage": np.zeros(len(queries), np.float32)}
    for q, features in enumerate(tqdm(queries, desc="verify candidates", unit="query")):
        top = np.argsort(-sims[q], kind="stable")[:verified].tolist()  # first: argmax, the top-1
        others = [r for r in keypoints.vote(features, voted) if r not in top]
        fits = [(features.fit(gallery[c]), float(sims[q, c]), c) for c in [*top, *others]]
        out["top1_inliers"][q], out["top1_coverage"][q] = fits[0][0].inliers, fits[0][0].coverage
        fitted, score, index = max(fits, key=lambda f: (f[0].inliers, f[1], f[2]))
        out["index"][q], out["inliers"][q], out["coverage"][q] = index, fitted.inliers, fitted.coverage
        out["score"][q] = score
    return out


def margin_for(negative_margins: np.ndarray, target_fpr: float) -> float:
    """The smallest margin with at most ``target_fpr`` of the negatives at or above it."""
    ordered = np.sort(negative_margins)[::-1]
    allowed = int(np.floor(target_fpr * len(ordered)))
    return float(ordered[allowed] + 1e-4) if allowed < len(ordered) else float(ordered[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--debs", type=Path, default=Path(".data/allowed-debs"))
    p.add_argument("--out", type=Path, default=Path(".data/runs/background.safetensors"))
    p.add_argument("--procedural-background", type=int, default=1000)
    p.add_argument("--gallery", type=int, default=6000)
    p.add_argument("--positives", type=int, default=1200)
    p.add_argument("--negatives", type=int, default=600)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--target-fpr", type=float, default=0.03,
                   help="no-origin queries declared a match, at most (the held-out floor is 5%%)")
    p.add_argument("--redecide", action="store_true", help="only set a new --target-fpr on a finished --out")
    p.add_argument("--seed", type=int, default=7)
    Settings.add_arguments(p, only=["vae", "transform", "device", "query_flip", "query_trim", "reference_regions"])
    args = p.parse_args(argv)
    # The background set is being made: the model is loaded without one (and without inpainting).
    settings = dataclasses.replace(Settings.from_args(args), inpainting=False, background="none")
    if args.redecide:
        return redecide(args.out, args.target_fpr, settings)
    started = time.monotonic()
    rng = np.random.default_rng(args.seed)
    bundle = ModelBundle.load(settings)
    embedder = Embedder(bundle, batch_size=32, layout=settings.region_layout)

    background_images = [im for pkg in BACKGROUND_PACKAGES for im in package_images(unpack_package(pkg, args.debs))]
    background_images += [procedural_image(5_000_000 + i, size=320) for i in range(args.procedural_background)]
    print(f"background: {len(background_images)} images")
    background = np.concatenate([embedder.reference_vectors(background_images[s:s + 256])
                                 for s in tqdm(range(0, len(background_images), 256), desc="background",
                                               unit="batch")])
    calibration = [im for pkg in CALIBRATION_PACKAGES for im in package_images(unpack_package(pkg, args.debs))]
    gallery_images = [im for im in calibration if not kept_out(im)]
    outside = [im for im in calibration if kept_out(im)]
    # A kept-out file whose picture is in the gallery under another file is no negative.
    copies = twins(pdq_hashes(outside), pdq_hashes(gallery_images)).any(axis=1)
    outside = [im for im, copy in zip(outside, copies) if not copy]
    n_procedural = max(0, args.gallery - len(gallery_images))
    gallery_images += [procedural_image(6_000_000 + i, size=320) for i in range(n_procedural)]
    outside += [procedural_image(7_000_000 + i, size=320) for i in range(len(outside) // 2)]
    print(f"calibration gallery: {len(gallery_images)} images; outside pool {len(outside)} "
          f"({int(copies.sum())} copies of gallery pictures left out)")
    gallery = np.concatenate([embedder.reference_vectors(gallery_images[s:s + 256])
                              for s in tqdm(range(0, len(gallery_images), 256), desc="gallery", unit="batch")])

    families = list(FAMILIES)
    positives, truth = [], []
    for i in rng.choice(len(gallery_images), args.positives, replace=False):
        seed = int(rng.integers(2**31))
        im = gallery_images[int(i)]
        edited = apply(families[seed % len(families)], im, seed) if seed % 3 else \
            random_seen_edit(im, np.random.default_rng(seed))
        positives.append(edited)
        truth.append(int(i))
    negatives = [random_seen_edit(outside[int(i)], np.random.default_rng(int(i)))
                 for i in rng.choice(len(outside), min(args.negatives, len(outside)), replace=False)]
    q_pos, q_neg = query_vectors(embedder, positives, settings), query_vectors(embedder, negatives, settings)
    sims_pos, sims_neg = similarities(q_pos, gallery), similarities(q_neg, gallery)
    best_pos = sims_pos.argmax(1)
    score_pos, score_neg = sims_pos.max(1), sims_neg.max(1)
    features = [extract(im) for im in tqdm(gallery_images, desc="keypoints", unit="image")]
    keypoints = KeypointIndex.built([KeypointChunk(np.arange(len(features)), [f.encode() for f in features])],
                                    len(features))
    f_pos, f_neg = query_features(positives, settings), query_features(negatives, settings)
    alt_pos = best_verified(f_pos, sims_pos, features, keypoints)
    alt_neg = best_verified(f_neg, sims_neg, features, keypoints)
    # Weight 1 while scoring: the saved margins are the plain ones, whatever weight is chosen.
    bg = BackgroundSet(background.reshape(-1, background.shape[-1]), bundle.version, k=args.k,
                       layout=embedder.layout, weight=1.0)
    scores = {"score_pos": score_pos, "score_neg": score_neg, "margin_pos": score_pos - bg.scores(q_pos),
              "margin_neg": score_neg - bg.scores(q_neg), "correct": best_pos == np.array(truth),
              "inliers_pos": alt_pos["top1_inliers"], "inliers_neg": alt_neg["top1_inliers"],
              "coverage_pos": alt_pos["top1_coverage"], "coverage_neg": alt_neg["top1_coverage"],
              # The best-verified candidate: how far below the top-1 it scores, its inliers.
              "alt_drop_pos": score_pos - alt_pos["score"], "alt_drop_neg": score_neg - alt_neg["score"],
              "alt_inliers_pos": alt_pos["inliers"], "alt_inliers_neg": alt_neg["inliers"],
              "alt_coverage_pos": alt_pos["coverage"], "alt_coverage_neg": alt_neg["coverage"],
              "alt_correct": alt_pos["index"] == np.array(truth)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out.with_suffix(".scores.npz"), **scores)
    bg.calibration = {
        "k": args.k,
        "background": {"packages": BACKGROUND_PACKAGES, "procedural": args.procedural_background,
                       "images": len(background_images)},
        "gallery": {"packages": CALIBRATION_PACKAGES, "images": len(gallery_images), "procedural": n_procedural},
        "negatives left out as PDQ copies of gallery pictures": int(copies.sum()),
        "queries": {"positives": len(positives), "negatives": len(negatives), "edits": "training.edits"},
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    decide(bg, scores, args.target_fpr, bundle.match_threshold)
    bg.save(args.out)
    print(json.dumps(bg.calibration, indent=1))
    print(f"wrote {args.out}")


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
        choose_verification(bg, Top1s.of(scores, pos, neg, correct), target_fpr, served)


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
            if getattr(self, f"coverage_{side}") is None:
                object.__setattr__(self, f"coverage_{side}", np.zeros(len(getattr(self, side)), np.float32))

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
    when its inliers reach the rule's count."""

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

    def at(self, count: int, top1s: Top1s) -> Top1s:
        """The top-1s served under an inlier count: a query's best-verified candidate where it
        reaches the count, its top-1 by score elsewhere."""
        up_pos, up_neg = self.inliers_pos >= count, self.inliers_neg >= count
        cover_pos = self.coverage_pos if self.coverage_pos is not None else np.zeros(len(up_pos), np.float32)
        cover_neg = self.coverage_neg if self.coverage_neg is not None else np.zeros(len(up_neg), np.float32)
        return Top1s(top1s.pos - np.where(up_pos, self.drop_pos, 0), top1s.neg - np.where(up_neg, self.drop_neg, 0),
                     np.where(up_pos, self.correct, top1s.correct),
                     np.where(up_pos, self.inliers_pos, top1s.inliers_pos),
                     np.where(up_neg, self.inliers_neg, top1s.inliers_neg),
                     np.where(up_pos, cover_pos, top1s.coverage_pos), np.where(up_neg, cover_neg, top1s.coverage_neg))


def choose_verification(bg: BackgroundSet, plain: Top1s, target_fpr: float, served: ServedTop1 | None = None) -> None:
    """Margin, inlier count, verified margin and coverage together: for each count in
    ``INLIER_COUNTS``, verified margin among the negatives' margin quantiles (0, 5%, ...,
    95%) and coverage in ``COVERAGES``, the smallest margin that keeps both ways to a match
    within ``target_fpr`` of the negatives, and the right positives each rule declares.
    When the data barely tell rules apart, the one that carries to unseen images is kept,
    as for the weight: the coverage clause only when the best rule with it declares more
    than the best without it by over one standard error; then the largest count within one
    standard error of the best (a higher count asks more evidence and re-ranks fewer
    candidates); the margin alone unless that rule beats it. With ``served``, each count is
    judged on the top-1s the service would rank first under it."""
    allowed = int(np.floor(target_fpr * len(plain.neg)))
    margin_only_margin = bg.match_margin
    margin_only = float(((plain.pos >= bg.match_margin) & plain.correct).mean())
    found: dict[tuple[bool, int], tuple[float, int, float, float, float]] = {}  # (clause, count): best rule
    for count in INLIER_COUNTS:
        t = served.at(count, plain) if served else plain
        for verify_margin in np.unique(np.quantile(t.neg, np.arange(0.0, 1.0, 0.05))):
            for coverage in COVERAGES:
                verified = (t.inliers_neg >= count) & ((t.neg >= verify_margin) | (t.coverage_neg >= coverage))
                left = allowed - int(verified.sum())
                if left < 0:
                    continue
                rest = np.sort(t.neg[~verified])[::-1]
                margin = float(rest[left] + 1e-4) if left < len(rest) else float(rest[-1])
                declared = (t.pos >= margin) | ((t.inliers_pos >= count) & (
                    (t.pos >= verify_margin) | (t.coverage_pos >= coverage)))
                rate = float((declared & t.correct).mean())
                slot = (not np.isinf(coverage), count)
                if slot not in found or rate > found[slot][0]:
                    found[slot] = (rate, count, float(verify_margin), margin, float(coverage))

    def error(rate: float) -> float:
        return float(np.sqrt(rate * (1 - rate) / len(plain.pos)))

    best = {clause: max((r[0] for (c, _), r in found.items() if c == clause), default=0.0) for clause in (False, True)}
    clause = best[True] > best[False] + error(best[False])
    steady = max((r for (c, _), r in found.items() if c == clause and r[0] >= best[clause] - error(best[clause])),
                 key=lambda r: r[1], default=None)
    chosen = steady if steady is not None and steady[0] > margin_only else \
        (margin_only, 0, 0.0, bg.match_margin, float("inf"))
    rate, count, verify_margin, margin, coverage = chosen
    bg.verify_inliers, bg.verify_margin, bg.match_margin, bg.verify_coverage = count, verify_margin, margin, coverage
    t = served.at(count, plain) if served and count else plain
    bg.calibration.update({
        "verify_inliers": count, "verify_margin": verify_margin, "verify_coverage": coverage, "match_margin": margin,
        "margin alone": margin_only_margin,
        "verified: false-match rate": float(t.declared(bg, "neg").mean()),
        "verified: correct positives declared": rate,
        "margin alone: correct positives declared": margin_only,
        "without a coverage clause: correct positives declared": best[False],
        "inliers, correct positives median / negatives p95": [
            float(np.median(t.inliers_pos[t.correct])) if t.correct.any() else float("nan"),
            float(np.quantile(t.inliers_neg, 0.95))],
    })


def redecide(out: Path, target_fpr: float, settings: Settings) -> None:
    """A new target on a finished calibration: its saved scores, no re-embedding."""
    bg = BackgroundSet.load(out)
    scores = dict(np.load(out.with_suffix(".scores.npz")))  # older files lack coverage: clause off
    bundle = ModelBundle.load(settings)
    decide(bg, scores, target_fpr, bundle.match_threshold)
    bg.save(out)
    print(json.dumps(bg.calibration, indent=1))
    print(f"rewrote {out}")

if __name__ == "__main__":
    main()
