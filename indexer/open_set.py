"""Open-set decisions: is the best candidate the query's origin, or is its origin not indexed?

A raw cosine threshold does not transfer: a query that resembles many images (flat
colour, drawings, heavy re-renders) scores high against *some* reference whether or not
its origin is indexed, and the best of N unrelated scores grows with N. Copy-detection
systems (SSCD on DISC21) normalise each query by a background set of images unrelated
to any gallery: the query's similarity to its k-th nearest background image measures how
much it resembles everything, and the decision uses the margin

    match_score = top-1 score - background_score(query)   >=   match_margin

``BackgroundSet`` holds those vectors (embedded by the model they belong to, so the file
names that model's version), the ``k`` used and the calibrated margin with the record of
its calibration (``training/calibrate_open_set.py``). It is optional: a model without
one decides on the raw score and its transform's threshold, as before.
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
    vectors: np.ndarray  # float32 (n, dim), L2-normalised
    model_version: str
    k: int = 10
    #: The margin over the background score at or above which the top-1 is a match.
    match_margin: float = 0.1
    #: How the margin was chosen (data sets, targets, measured rates).
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= len(self.vectors):
            raise ValueError(f"k = {self.k} needs at least that many background vectors, got {len(self.vectors)}")

    def scores(self, views: np.ndarray) -> np.ndarray:
        """Each query's background score: the k-th largest similarity of any of its views
        (rows of ``views``, shape (q, v, dim)) to the background vectors, shape (q,). The
        views are those the candidates are scored with, so the two sides compare alike."""
        sims = np.einsum("qvd,nd->qvn", views, self.vectors)
        kth = np.partition(sims, -self.k, axis=2)[:, :, -self.k]
        return kth.max(axis=1)

    def score(self, views: np.ndarray) -> float:
        """One query's background score from its views (v, dim)."""
        return float(self.scores(views[None])[0])

    def save(self, path: Path) -> None:
        meta = {"model_version": self.model_version, "k": str(self.k), "match_margin": repr(self.match_margin),
                "calibration": json.dumps(self.calibration)}
        save_file({"vectors": self.vectors.astype(np.float16)}, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> BackgroundSet:
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
        missing = {"model_version", "k", "match_margin"} - set(meta)
        if missing:
            raise ValueError(f"{path} is not a background set: no {', '.join(sorted(missing))} in its metadata")
        return cls(vectors=load_file(str(path))["vectors"].astype(np.float32), model_version=meta["model_version"],
                   k=int(meta["k"]), match_margin=float(meta["match_margin"]),
                   calibration=json.loads(meta.get("calibration") or "{}"))
