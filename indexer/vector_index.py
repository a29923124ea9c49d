"""FAISS over the store's vectors: a cache that PostgreSQL can always rebuild.

The index is two parts. The *base* is built from one snapshot of the store
(``IndexFeed.snapshot``, streamed) with the index its size calls for
(``origin_id.indexer.index_plan``: exact below a size, an IVF trained on a sample above)
and never changes afterwards. Writes since go to the *delta*, a small exact index, and
deletions of base vectors to a *deleted* set that searches exclude. So an add or a delete
costs the same whatever the size, a checkpoint copies only the small parts under the lock
and writes the base once per build, and a search never waits for either. When the delta
and deleted set grow past a share of the base, or the size calls for another kind of
index, ``rebuild`` makes a new base in the background and swaps it in atomically; the
server answers throughout.

Other processes' writes arrive through the change log (``sync``: the cost follows the
changes). Searches can be restricted to collections: small ones are scanned exactly (their
vectors read back from the index), large ones searched with an id selector; never a wider
global search. A GPU copy of the base serves unfiltered searches where faiss has GPU
support and CUDA is present. Every search runs on the compute thread
(``origin_id.models.compute``), where the models run.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from origin_id.indexer import index_plan
from origin_id.indexer.index_parts import Base, atomic, atomic_path, cat, empty, exact, merge, reconstruct
from origin_id.indexer.index_plan import IndexPlan
from origin_id.indexer.store.feed import Changes, IndexFeed, Snapshot
from origin_id.models import compute

log = logging.getLogger(__name__)

#: A collection filter with at most this many vectors is scanned exactly.
SMALL_FILTER = 50_000
#: The delta and deleted set may grow to this share of the base before a rebuild.
REBUILD_SHARE = 0.1
REBUILD_MIN = 20_000
#: Vectors of a loaded index compared with the store's before it is trusted.
SPOT_CHECK = 64
#: Vectors added to a new base per turn on the compute thread while the server answers.
ADD_PIECE = 1000


def gpu_available() -> bool:
    try:
        import torch

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 and torch.cuda.is_available()
    except Exception:
        return False


class VectorIndex:
    def __init__(self, dim: int, use_gpu: str = "auto", gpu_device: int = 0, memory_budget_mib: float = 1024):
        self.dim, self.memory_budget_mib = dim, memory_budget_mib
        self._lock = threading.RLock()
        self._base = self._empty_base()
        self._delta = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._delta_collections: dict[int, int] = {}
        self._deleted: set[int] = set()
        self._snapshot = Snapshot(0)
        self._base_saved = False
        self.dirty = False
        self._gpu_res = None
        self._gpu_device = gpu_device
        if use_gpu == "on" or (use_gpu == "auto" and gpu_available()):
            if not gpu_available():
                raise RuntimeError("faiss GPU index requested but faiss has no GPU support or no CUDA device")
            self._gpu_res = faiss.StandardGpuResources()

    def _empty_base(self) -> Base:
        plan = IndexPlan("exact", "IDMap2,Flat")
        return Base(index_plan.build(plan, self.dim), plan, np.zeros(0, np.int64), np.zeros(0, np.int64))

    # -- description --------------------------------------------------------------

    @property
    def on_gpu(self) -> bool:
        return self._gpu_res is not None

    @property
    def recall_at_1(self) -> float:
        return self._base.recall

    @property
    def description(self) -> str:
        base = self._base
        probe = f", nprobe {base.nprobe}" if base.plan.trained else ""
        return (f"faiss-{'gpu' if self.on_gpu else 'cpu'} {base.plan.factory} (d={self.dim}{probe}) "
                f"+ {self._delta.ntotal} recent, {len(self._deleted)} deleted")

    def __len__(self) -> int:
        with self._lock:
            return len(self._base.ids) - len(self._deleted) + int(self._delta.ntotal)

    def contains(self, embedding_id: int) -> bool:
        with self._lock:
            if embedding_id in self._delta_collections:
                return True
            return embedding_id not in self._deleted and bool(self._base.contains(np.array([embedding_id]))[0])

    # -- writes -------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray, collection_ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors have shape {vectors.shape}, expected ({len(ids)}, {self.dim})")
        with self._lock:
            fresh = ~self._base.contains(ids) & np.array([i not in self._delta_collections for i in ids.tolist()])
            if not fresh.any():
                return
            self._delta.add_with_ids(vectors[fresh], ids[fresh])
            self._delta_collections.update(zip(ids[fresh].tolist(), np.asarray(collection_ids)[fresh].tolist()))
            self.dirty = True

    def remove(self, ids) -> int:
        ids = np.asarray(list(ids), np.int64)
        with self._lock:
            in_delta = [i for i in ids.tolist() if i in self._delta_collections]
            if in_delta:
                self._delta.remove_ids(np.asarray(in_delta, np.int64))
                for i in in_delta:
                    del self._delta_collections[i]
            in_base = [i for i, hit in zip(ids.tolist(), self._base.contains(ids)) if hit and i not in self._deleted]
            self._deleted.update(in_base)
            removed = len(in_delta) + len(in_base)
            self.dirty = self.dirty or bool(removed)
            return removed

    # -- search -------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int,
               collection_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) each (n, k), best first, -1 ids padding; ``collection_ids``: only
        vectors of these collections (None = all)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return compute.run(self._search, queries, k, collection_ids)

    def _search(self, queries: np.ndarray, k: int, collection_ids: np.ndarray | None):
        with self._lock:  # the delta changes with every write: searched under the lock (it is small)
            base, deleted = self._base, np.fromiter(self._deleted, np.int64, len(self._deleted))
            results = [self._search_delta(queries, k, collection_ids)]
        if collection_ids is None:
            results.append(self._search_base(base, queries, k, deleted, None))
        else:
            allowed = base.ids[np.isin(base.collections, collection_ids)]
            allowed = allowed[~np.isin(allowed, deleted)] if len(deleted) else allowed
            if len(allowed) <= SMALL_FILTER:
                results.append(exact(queries, allowed, reconstruct(base.index, allowed, self.dim), k))
            else:
                results.append(self._search_base(base, queries, k, deleted, allowed))
        return merge(results, k)

    def _search_base(self, base: Base, queries, k, deleted: np.ndarray, allowed: np.ndarray | None):
        if not len(base.ids):
            return empty(len(queries), k)
        if allowed is None and base.gpu is not None:  # GPU indexes take no selector: drop deleted after
            scores, ids = base.gpu.search(queries, min(len(base.ids), k + len(deleted)))
            if len(deleted):
                scores = np.where(np.isin(ids, deleted), -np.inf, scores)
            return scores, ids
        selector = None
        if allowed is not None:
            selector = base.selector(allowed, keep=True)
        elif len(deleted):
            selector = base.selector(deleted, keep=False)
        scores, ids = base.index.search(queries, min(len(base.ids), k), params=base.params(selector))
        return scores, ids

    def _delta_contents(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the delta, in its storage order (call under the lock)."""
        if not self._delta.ntotal:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        return faiss.vector_to_array(self._delta.id_map), self._delta.index.reconstruct_n(0, self._delta.ntotal)

    def _search_delta(self, queries: np.ndarray, k: int, collection_ids: np.ndarray | None):
        """The delta's best (call under the lock)."""
        if not self._delta.ntotal:
            return empty(len(queries), k)
        params = None
        if collection_ids is not None:
            wanted = set(collection_ids.tolist())
            ids = [i for i, c in self._delta_collections.items() if c in wanted]
            if not ids:
                return empty(len(queries), k)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(ids, np.int64)))
        return self._delta.search(queries, min(k, int(self._delta.ntotal)), params=params)

    # -- builds and the change log --------------------------------------------------

    def rebuild(self, feed: IndexFeed, model_version: str, total: int | None = None, background: bool = False) -> None:
        """A new base from a snapshot of the store, swapped in when ready. ``background``: the
        server is answering meanwhile, so the work goes to the compute thread in small pieces
        (a query waits for one piece at most)."""
        started = time.monotonic()
        total = feed.store.count_embeddings(model_version) if total is None else total
        plan = index_plan.plan_for(total, self.dim, self.memory_budget_mib)
        index = index_plan.build(plan, self.dim)
        if plan.trained:
            sample = feed.store.sample_vectors(model_version, index_plan.training_size(plan))
            compute.run(index.train, sample)
        ids, colls, exact = [], [], None
        with feed.snapshot(model_version) as (snapshot, chunks):
            for chunk in chunks:
                if exact is None and len(chunk.ids):
                    exact = index_plan.ExactTop1(index_plan.near_duplicates(chunk.vectors[:index_plan.RECALL_QUERIES]))
                step = ADD_PIECE if background else len(chunk.ids)
                for start in range(0, len(chunk.ids), max(step, 1)):
                    compute.run(index.add_with_ids, chunk.vectors[start:start + step], chunk.ids[start:start + step])
                if plan.trained and exact is not None:
                    exact.update(chunk.ids, chunk.vectors)
                ids.append(chunk.ids)
                colls.append(chunk.collection_ids)
        nprobe, recall = index_plan.tune_nprobe(index, plan, exact) if exact is not None else (0, 1.0)
        base = Base(index, plan, cat(ids), cat(colls), nprobe, recall)
        if self._gpu_res is not None and len(base.ids):
            base.gpu = faiss.index_cpu_to_gpu(self._gpu_res, self._gpu_device, index)
        with self._lock:
            self._base, self._snapshot = base, snapshot
            self._delta.reset()
            self._delta_collections.clear()
            self._deleted.clear()
            self._base_saved, self.dirty = False, True
        self.sync(feed, model_version)  # what was written while the base was being built
        log.info("index built: %s, %d vectors, recall@1 %.3f, in %.1f s", plan.factory, len(base.ids), recall,
                 time.monotonic() - started)

    def needs_rebuild(self, total: int) -> bool:
        with self._lock:
            base = self._base
            pending = int(self._delta.ntotal) + len(self._deleted)
        if index_plan.plan_for(total, self.dim, self.memory_budget_mib).factory != base.plan.factory:
            return True
        return pending > max(REBUILD_MIN, REBUILD_SHARE * len(base.ids))

    def sync(self, feed: IndexFeed, model_version: str) -> tuple[int, int]:
        """Apply the changes other processes (and this one) committed since the last read."""
        with self._lock:
            since = self._snapshot
        changes: Changes = feed.changes(model_version, since)
        vectors = dict(zip(changes.added.ids.tolist(), range(len(changes.added.ids))))
        added = removed = 0
        for _, embedding_id, op in changes.rows:
            if op == "a" and embedding_id in vectors:
                row = vectors[embedding_id]
                before = len(self)
                self.add(changes.added.ids[row:row + 1], changes.added.vectors[row:row + 1],
                         changes.added.collection_ids[row:row + 1])
                added += len(self) - before
            elif op == "d":
                removed += self.remove([embedding_id])
        with self._lock:
            self._snapshot = changes.snapshot
        return added, removed

    # -- persistence ----------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """The base (once per build) and the small parts, each written to a temporary file and
        renamed; the lock is held only to copy the small parts."""
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        with self._lock:
            base, base_saved = self._base, self._base_saved
            order, delta_vectors = self._delta_contents()
            state = {"delta_ids": order, "delta_vectors": delta_vectors,
                     "delta_collections": np.array([self._delta_collections[int(i)] for i in order], np.int64),
                     "deleted": np.fromiter(self._deleted, np.int64, len(self._deleted)),
                     "applied": np.fromiter(self._snapshot.applied, np.int64, len(self._snapshot.applied))}
            meta = {"xmin": self._snapshot.xmin, "plan": asdict(base.plan), "nprobe": base.nprobe,
                    "recall": base.recall, "dim": self.dim, "saved_at": time.time()}
            self.dirty = False
        if not base_saved:
            atomic_path(folder / "base.faiss", lambda path: faiss.write_index(base.index, str(path)))
            atomic(folder / "base-ids.npz",
                   lambda f: np.savez(f, ids=base.added_ids, collections=base.added_collections))
            with self._lock:
                self._base_saved = self._base is base
        atomic(folder / "state.npz", lambda f: np.savez(f, **state))
        atomic(folder / "state.json", lambda f: f.write(json.dumps(meta).encode()))

    def load(self, folder: Path, feed: IndexFeed, model_version: str, max_age_s: float) -> str | None:
        """Load a saved index, check a sample of it against the store and catch up from the
        change log; None when loaded, else why it must be rebuilt."""
        try:
            meta = json.loads((folder / "state.json").read_text())
            if meta["dim"] != self.dim:
                return f"dimension {meta['dim']} != {self.dim}"
            if time.time() - meta["saved_at"] > max_age_s:
                return "saved longer ago than the change log keeps"
            index = faiss.read_index(str(folder / "base.faiss"))
            with np.load(folder / "base-ids.npz") as b, np.load(folder / "state.npz") as s:
                base = Base(index, IndexPlan(**meta["plan"]), b["ids"], b["collections"], meta["nprobe"],
                             meta["recall"])
                state = {k: s[k] for k in s.files}
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            return f"no usable saved index ({type(exc).__name__}: {str(exc)[:120]})"
        if index.ntotal != len(base.ids) or index.d != self.dim:
            return "the saved index does not match its ids"
        if self._gpu_res is not None and len(base.ids):
            base.gpu = faiss.index_cpu_to_gpu(self._gpu_res, self._gpu_device, index)
        with self._lock:
            self._base, self._base_saved = base, True
            self._delta.reset()
            self._delta_collections.clear()
            if len(state["delta_ids"]):
                self._delta.add_with_ids(state["delta_vectors"], state["delta_ids"])
                self._delta_collections.update(zip(state["delta_ids"].tolist(), state["delta_collections"].tolist()))
            self._deleted = set(state["deleted"].tolist())
            self._snapshot = Snapshot(int(meta["xmin"]), set(state["applied"].tolist()))
        reason = self._spot_check(feed, model_version)
        if reason is None:
            self.sync(feed, model_version)
        return reason

    def _spot_check(self, feed: IndexFeed, model_version: str) -> str | None:
        base = self._base
        live = base.ids[~np.isin(base.ids, np.fromiter(self._deleted, np.int64, len(self._deleted)))]
        if not len(live):
            return None
        sample = np.random.default_rng().choice(live, min(SPOT_CHECK, len(live)), replace=False)
        stored = feed.store.vectors_of(sample.tolist(), model_version)
        got = reconstruct(base.index, sample, self.dim)
        for i, embedding_id in enumerate(sample.tolist()):
            vector = stored.get(embedding_id)
            tolerance = 1e-6 if not base.plan.trained else 0.05  # quantized codes are close, not equal
            if vector is None or np.abs(vector - got[i]).max() > tolerance:
                return f"saved vector {embedding_id} is not the store's"
        return None

    def close(self) -> None:
        with self._lock:
            self._base.gpu = None

