"""Open-set decisions: is the best candidate the query's origin, or is its origin not indexed?

A raw cosine threshold does not transfer: a query that resembles many images (flat
colour, drawings, heavy re-renders) scores high against *some* reference whether or not
its origin is indexed, and the best of N unrelated scores grows with N. Copy-detection
systems (SSCD on DISC21) normalise each query by a background set of images unrelated
to any gallery: the query's similarity to its k-th nearest background image measures how
much it resembles everything, and the decision uses the margin

    match_score = top-1 score - weight * kth_background_similarity(query)   >=   match_margin

The weight is calibrated with the margin: 1 is the plain margin, 0 the raw score. A
stronger encoder leaves less for the normalisation to correct (its unrelated images
already score low), and the calibration picks the weight that declares the most right
matches at the target false-match rate on its data.

``BackgroundSet`` holds those vectors (embedded by the model they belong to, so the file
names that model's version), each image whole and by the regions references are indexed
by (``origin_id.indexer.regions``: a query meets every reference by its best region, so
it meets the background images the same way), the ``k`` used and the calibrated margin with the record of
its calibration (``training/calibrate_open_set.py``). It is optional: a model without
one decides on the raw score and its transform's threshold, as before.

Geometric verification (``origin_id.indexer.local_features``) adds a second way to a
match: the top-1 candidate's keypoint inliers. A crop, a tilt or a picture inside a post
scores low on the global embedding although its keypoints fit its origin's, while
look-alikes score high and fit poorly. So, when calibrated (``verify_inliers`` > 0),

    match  =  match_score >= match_margin
              or (inliers >= verify_inliers
                  and (match_score >= verify_margin or coverage >= verify_coverage))

with all four values chosen together for the target false-match rate. The coverage clause
is for copies that moved the picture (a deep crop, a picture padded and turned): their
vectors score low, and many inliers alone do not prove a copy, since two pictures that
share a part (a drawn figure, a dialog's frame) fit many inliers inside that part; inliers
spanning most of the query do. ``verify_coverage`` is infinite (clause off) in files
calibrated before it.

A third way needs fewer inliers: the pixels (``local_features.agreement``). A crop of a
drawing fits its origin by 10-40 inliers that cover little of it, but laid on its origin
by the fitted transform it agrees with it everywhere; two pictures sharing a part do
not. So ``or (inliers >= dense_inliers and agreement >= dense_agreement)``, calibrated
with the rest (``dense_inliers`` 0: clause off, as in files calibrated before it).

Ranking is calibrated apart (``rank_lead``): a candidate that fits the query by that many
more inliers than the top-1 by score ranks first (``origin_id.indexer.candidates.rank``). A
crop of a small drawing fits its origin by 10-30 inliers where unrelated candidates fit
0-4, too few to *declare* a match on but plenty to *rank* by; between two candidates that
both fit (a texture and its variant), a few inliers more are noise, so it is a lead over
the vectors' choice and not a count. The decision is calibrated on the top-1s this
ranking serves. Files calibrated before it rank by a lead of ``verify_inliers``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

FILE_NAME = "background.safetensors"


@dataclass
class BackgroundSet:
    vectors: np.ndarray  # float32 (n_images * per_image, dim), L2-normalised; an image's rows together
    model_version: str
    k: int = 10
    #: The margin over the background score at or above which the top-1 is a match.
    match_margin: float = 0.1
    #: How the margin was chosen (data sets, targets, measured rates).
    calibration: dict[str, Any] = field(default_factory=dict)
    #: The region layout each image's rows after the first (the whole image) were cut by.
    layout: tuple = ()
    #: What the k-th similarity counts for in the background score (calibrated; 1 = plain margin).
    weight: float = 1.0
    #: Verified matches: this many keypoint inliers with the top-1 (0 = rule off) ...
    verify_inliers: int = 0
    #: ... and a match score of at least this, or inliers spanning this share of the query.
    verify_margin: float = 0.0
    verify_coverage: float = float("inf")
    #: Inliers beyond the top-1's by which a candidate ranks first (0: ``verify_inliers``).
    rank_lead: int = 0
    #: Matches by agreement: this many inliers (0 = clause off) and pixels agreeing this well.
    dense_inliers: int = 0
    dense_agreement: float = float("inf")

    def __post_init__(self) -> None:
        if len(self.vectors) % self.per_image:
            raise ValueError(f"{len(self.vectors)} background vectors do not split into images of "
                             f"{self.per_image} rows (1 + {len(self.layout)} regions)")
        if not 1 <= self.k <= self.images:
            raise ValueError(f"k = {self.k} needs at least that many background images, got {self.images}")

    @property
    def per_image(self) -> int:
        """Rows per background image: the whole image, then its regions."""
        return 1 + len(self.layout)

    @property
    def ranking_lead(self) -> int:
        """The inlier lead that ranks a candidate first (0 = no ranking)."""
        return self.rank_lead or self.verify_inliers

    @property
    def images(self) -> int:
        return len(self.vectors) // self.per_image

    def scores(self, views: np.ndarray, regions: bool = True) -> np.ndarray:
        """Each query's background score, shape (q,): ``weight`` times the k-th largest
        similarity to a background image, a query's similarity to an image being the best over its views
        (rows of ``views``, shape (q, v, dim)) and the image's rows: its regions too when
        ``regions`` (the references are indexed by them), else the whole image only.
        Candidates are scored the same way, so the two sides compare alike."""
        sims = np.einsum("qvd,nd->qvn", views, self.vectors).max(axis=1)
        per_image = sims.reshape(len(views), self.images, self.per_image)
        best = per_image.max(axis=2) if regions else per_image[:, :, 0]
        return self.weight * np.partition(best, -self.k, axis=1)[:, -self.k]

    def decide(self, match_score: float, inliers: int, coverage: float = 0.0, agreement: float = 0.0) -> str:
        """The match decision from the top-1's match score, keypoint inliers (-1: not
        verified), their coverage of the query and the pixels' agreement: "score",
        "verified", or "" for no match."""
        if match_score >= self.match_margin:
            return "score"
        verified = bool(self.verify_inliers) and inliers >= self.verify_inliers and (
            match_score >= self.verify_margin or coverage >= self.verify_coverage)
        agreed = bool(self.dense_inliers) and inliers >= self.dense_inliers and agreement >= self.dense_agreement
        return "verified" if verified or agreed else ""

    def score(self, views: np.ndarray, regions: bool = True) -> float:
        """One query's background score from its views (v, dim)."""
        return float(self.scores(views[None], regions)[0])

    def save(self, path: Path) -> None:
        meta = {"model_version": self.model_version, "k": str(self.k), "match_margin": repr(self.match_margin),
                "calibration": json.dumps(self.calibration), "layout": json.dumps([list(b) for b in self.layout]),
                "weight": repr(self.weight), "verify_inliers": str(self.verify_inliers),
                "verify_margin": repr(self.verify_margin), "verify_coverage": repr(self.verify_coverage),
                "rank_lead": str(self.rank_lead), "dense_inliers": str(self.dense_inliers),
                "dense_agreement": repr(self.dense_agreement)}
        save_file({"vectors": self.vectors.astype(np.float16)}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> BackgroundSet:
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        missing = {"model_version", "k", "match_margin"} - set(meta)
        if missing:
            raise ValueError(f"{path} is not a background set: no {', '.join(sorted(missing))} in its metadata")
        layout = tuple(tuple(b) for b in json.loads(meta.get("layout") or "[]"))
        return cls(vectors=load_file(str(path))["vectors"].astype(np.float32), model_version=meta["model_version"],
                   k=int(meta["k"]), match_margin=float(meta["match_margin"]),
                   calibration=json.loads(meta.get("calibration") or "{}"), layout=layout,
                   weight=float(meta.get("weight", "1.0")), verify_inliers=int(meta.get("verify_inliers", "0")),
                   verify_margin=float(meta.get("verify_margin", "0.0")),
                   verify_coverage=float(meta.get("verify_coverage", "inf")),
                   rank_lead=int(meta.get("rank_lead", "0")), dense_inliers=int(meta.get("dense_inliers", "0")),
                   dense_agreement=float(meta.get("dense_agreement", "inf")))
