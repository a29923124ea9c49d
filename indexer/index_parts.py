"""The pieces ``VectorIndex`` is made of: an immutable built base, exact scans, merging
results, and files written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from origin_id.indexer import index_plan
from origin_id.indexer.index_plan import IndexPlan


class Base:
    """An immutable built index, its ids and their collections (given in the order they were
    added; kept sorted, with each one's position in that order)."""

    def __init__(self, index: faiss.Index, plan: IndexPlan, ids: np.ndarray, collections: np.ndarray,
                 nprobe: int = 0, recall: float = 1.0):
        order = np.argsort(ids)
        self.index, self.plan, self.nprobe, self.recall = index, plan, nprobe, recall
        self.ids, self.collections = ids[order], collections[order]
        # Where each (sorted) id was added: an IVF's selectors count positions, not ids.
        self.positions = order.astype(np.int64)
        self.added_ids, self.added_collections = ids, collections
        self.gpu: faiss.Index | None = None

    def contains(self, ids: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self.ids, ids)
        return (at < len(self.ids)) & (self.ids[np.minimum(at, len(self.ids) - 1)] == ids) if len(self.ids) \
            else np.zeros(len(ids), bool)

    def selector(self, ids: np.ndarray, keep: bool) -> faiss.IDSelector:
        """Only ``ids`` (``keep``), or all but them, in the terms this base's search takes."""
        if self.plan.trained:
            at = np.searchsorted(self.ids, ids)
            found = (at < len(self.ids)) & (self.ids[np.minimum(at, len(self.ids) - 1)] == ids)
            ids = self.positions[at[found]]
        chosen = faiss.IDSelectorBatch(np.ascontiguousarray(ids, np.int64))
        return chosen if keep else faiss.IDSelectorNot(chosen)

    def params(self, selector: faiss.IDSelector | None):
        return index_plan.search_params(self.plan, self.nprobe, selector)


def cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)


def reconstruct(index: faiss.Index, ids: np.ndarray, dim: int) -> np.ndarray:
    if not len(ids):
        return np.zeros((0, dim), np.float32)
    return index.reconstruct_batch(np.ascontiguousarray(ids, np.int64))


def exact(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if not len(ids):
        return empty(len(queries), k)
    scores = queries @ vectors.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, top, 1), ids[top]


def merge(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([s for s, _ in parts], 1)
    ids = np.concatenate([i for _, i in parts], 1)
    scores = np.where(ids < 0, -np.inf, scores)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    scores, ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return scores, np.where(np.isfinite(scores), ids, -1)


def atomic(path: Path, write) -> None:
    """``write(file)`` into a temporary file beside ``path`` (0600), then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        os.chmod(tmp, 0o600)
        write(f)
    os.replace(tmp, path)


def atomic_path(path: Path, write) -> None:
    """``write(temporary path)`` beside ``path``, made 0600 and renamed over it (for writers
    that open the file themselves, like faiss's, which streams without holding the GIL)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
