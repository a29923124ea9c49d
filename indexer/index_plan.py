"""Which FAISS index a size and a memory budget call for, and how well it finds what exact
search finds.

Below ``EXACT_BELOW`` vectors (and when they fit the budget) the index is exact: an
``IDMap2,Flat`` scanned in full, cheap at that size. Above, an inverted file
(``IVF{nlist},...``, built with ``faiss.index_factory`` and trained on a sample read from
PostgreSQL): about ``sqrt(n)`` lists (fewer than autofaiss's ``4 sqrt(n)``: training and
adding cost in proportion to the lists, on two cores). The lists hold 4-bit product
quantization codes scanned with SIMD (``x4fs``, FAISS's fast scan), cheap enough to probe
many lists, which queries far from their source need; the candidates are then re-ranked
with 8-bit scalar codes (``Refine(SQ8)``), or coarser ones when the memory budget is
smaller. ``IDMap2`` keeps the store's embedding ids. How many
lists a search probes (``nprobe``) is tuned at build time: the smallest with which, for
near-duplicate queries of stored vectors, the top-1 of exact search is among the
``CANDIDATES`` the index returns in at least ``TARGET_RECALL`` of cases. That is recall@1
as served: the service scores its candidates exactly from their stored vectors, so a
true top-1 among them is the answer's top-1. The recall reached is reported with the index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import faiss
import numpy as np

EXACT_BELOW = 100_000
TARGET_RECALL = 0.995
#: Near-duplicate queries used to measure recall, and how far they are from their source:
#: cosine about 0.6, as far as an edited copy may be and still match (the bundled model's
#: threshold is 0.57); nearer copies are found at least as often.
RECALL_QUERIES = 300
#: Candidates per query view the service takes from the index and scores exactly
#: (``OriginIndex.search``: top_k x 4 at the default top_k).
CANDIDATES = 40
NEAR_DUPLICATE_NOISE = 1.33
#: Candidates re-ranked with the finer codes, per candidate returned.
REFINE_FACTOR = 2
NPROBES = (8, 16, 32, 64, 128, 256, 512, 1024)
#: nprobe is set to this many times the tuned value (at most every list): real edited copies
#: lie further from their sources, in ways no synthetic query captures, and fast-scan probes
#: are cheap (bench/results/scale.md measures recall on real copies).
NPROBE_MARGIN = 4


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
    fast_scan = f"PQ{dim // 4}x4fs"  # dim / 8 bytes a vector
    refine = "SQ8" if n * (dim + dim // 8) <= budget else f"PQ{max(8, dim // 8)}"
    return IndexPlan("ivf", f"IDMap2,IVF{nlist},{fast_scan},Refine({refine})", nlist)


def build(plan: IndexPlan, dim: int) -> faiss.Index:
    return faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)


def search_params(plan: IndexPlan, nprobe: int, selector: faiss.IDSelector | None):
    """Search parameters for a base of ``plan``. An IVF's selector reaches the lists below the
    refinement, where vectors are numbered in the order they were added (``positions``)."""
    if not plan.trained:
        return faiss.SearchParameters(sel=selector) if selector is not None else None
    return faiss.IndexRefineSearchParameters(
        k_factor=REFINE_FACTOR, base_index_params=faiss.SearchParametersIVF(nprobe=nprobe, sel=selector))


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
    """(nprobe, recall@1 as served against exact) for an IVF index; (0, 1.0) for an exact one."""
    if not plan.trained or not len(exact.queries):
        return 0, 1.0
    recall, tried = 0.0, 0
    for nprobe in NPROBES:
        if nprobe > plan.nlist:
            break
        tried = nprobe
        _, ids = index.search(exact.queries, CANDIDATES, params=search_params(plan, nprobe, None))
        recall = float((ids == exact.ids[:, None]).any(1).mean())
        if recall >= TARGET_RECALL:
            break
    chosen = min(plan.nlist, tried * NPROBE_MARGIN)
    _, ids = index.search(exact.queries, CANDIDATES, params=search_params(plan, chosen, None))
    return chosen, float((ids == exact.ids[:, None]).any(1).mean())
