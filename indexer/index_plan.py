"""Which FAISS index a size and a memory budget call for, and how well it finds what exact
search finds.

Below ``EXACT_BELOW`` vectors (and when they fit the budget) the index is exact: an
``IDMap2,Flat`` scanned in full, cheap at that size. Above, an inverted file
(``IVF{nlist},...``, built with ``faiss.index_factory`` and trained on a sample read from
PostgreSQL): about ``sqrt(n)`` lists (fewer than autofaiss's ``4 sqrt(n)``: training and
adding cost in proportion to the lists, on two cores), and codes as large as the
memory budget allows (full vectors, 8-bit scalars, or product quantization). How many
lists a search probes (``nprobe``) is tuned at build time: the smallest that finds, for
near-duplicate queries of stored vectors, the top-1 that exact search finds in at least
``TARGET_RECALL`` of cases; the recall reached is reported with the index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

EXACT_BELOW = 100_000
TARGET_RECALL = 0.99
#: Near-duplicate queries used to measure recall, and how far they are from their source
#: (cosine about 0.9: what an edited copy of a reference scores against it).
RECALL_QUERIES = 300
NEAR_DUPLICATE_NOISE = 0.5
NPROBES = (4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class IndexPlan:
    kind: str  # "exact" or "ivf"
    factory: str
    nlist: int = 0

    @property
    def trained(self) -> bool:
        return self.kind == "ivf"


def plan_for(n: int, dim: int, memory_budget_mib: float) -> IndexPlan:
    budget = memory_budget_mib * 2**20
    if n < EXACT_BELOW and n * dim * 4 <= budget:
        return IndexPlan("exact", "IDMap2,Flat")
    nlist = int(2 ** round(math.log2(max(256.0, min(65536.0, math.sqrt(max(n, 1)))))))
    if n * dim * 4 <= budget / 2:
        code = "Flat"
    elif n * dim <= budget:
        code = "SQ8"
    else:
        code = f"PQ{max(8, dim // 8)}"
    return IndexPlan("ivf", f"IVF{nlist},{code}", nlist)


def build(plan: IndexPlan, dim: int) -> faiss.Index:
    index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.trained:
        # Vectors addressed by id (reconstruct, for small filtered searches and checks).
        faiss.extract_index_ivf(index).set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def training_size(plan: IndexPlan) -> int:
    return max(30 * plan.nlist, 10_000) if plan.trained else 0


def near_duplicates(sources: np.ndarray, seed: int = 0) -> np.ndarray:
    """Queries near ``sources`` (unit vectors): each source plus isotropic noise, normalised."""
    noise = np.random.default_rng(seed).normal(size=sources.shape).astype(np.float32)
    noise *= NEAR_DUPLICATE_NOISE / math.sqrt(sources.shape[1])
    queries = sources + noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


class ExactTop1:
    """The exact top-1 id of fixed queries, accumulated over the vectors as they stream by."""

    def __init__(self, queries: np.ndarray):
        self.queries = queries
        self.best = np.full(len(queries), -np.inf, np.float32)
        self.ids = np.full(len(queries), -1, np.int64)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        scores = self.queries @ vectors.T
        top = scores.argmax(1)
        better = scores[np.arange(len(top)), top] > self.best
        self.best[better] = scores[np.arange(len(top)), top][better]
        self.ids[better] = ids[top[better]]


def tune_nprobe(index: faiss.Index, plan: IndexPlan, exact: ExactTop1) -> tuple[int, float]:
    """(nprobe, recall@1 against exact) for an IVF index; (0, 1.0) for an exact one."""
    if not plan.trained or not len(exact.queries):
        return 0, 1.0
    ivf = faiss.extract_index_ivf(index)
    recall = 0.0
    for nprobe in NPROBES:
        if nprobe > plan.nlist:
            break
        ivf.nprobe = nprobe
        _, ids = index.search(exact.queries, 1)
        recall = float((ids[:, 0] == exact.ids).mean())
        if recall >= TARGET_RECALL:
            return nprobe, recall
    return ivf.nprobe, recall
