"""FAISS over the store's vectors: a cache that can always be rebuilt.

* Exact inner-product search (vectors are L2-normalised, so scores are
  cosine similarities) keyed by the store's embedding ids.
* A CPU ``IndexIDMap2(IndexFlatIP)`` is the master copy: it supports
  ``add_with_ids`` / ``remove_ids`` and is what gets saved. When faiss has
  GPU support and CUDA is present, searches run on a GPU replica. GPU flat
  indexes cannot remove vectors, so a deletion marks the replica stale and
  the next search re-copies it from the master: deletes take effect at once.
* All searches go through one worker thread that batches concurrent queries:
  faiss GPU indexes are not thread-safe, and one batched search beats many
  small ones on either device. The worker hands each batch to the process's
  compute thread (``origin_id.models.compute``), where the models run too: faiss and
  torch share an OpenMP runtime that slows down once several threads use it.
* ``save`` writes the index and a checkpoint (model version, count, max id,
  id sum, file hash) atomically, readable by the service's user only;
  ``load_or_rebuild`` trusts the file only if the checkpoint matches the store
  and a sample of its vectors (``SPOT_CHECK``) is what the store holds for those
  ids (the checkpoint is beside the file: whoever can forge one can forge the
  other, not the database), otherwise it rebuilds from PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from origin_id.indexer.store import Checkpoint, ReferenceStore
from origin_id.models import compute

log = logging.getLogger(__name__)

#: Over-fetch factor so that masked (deleted) hits and collection filtering
#: still leave k results.
_OVERFETCH = 4
#: Vectors of a loaded index compared with the store's before it is trusted.
SPOT_CHECK = 64


def gpu_available() -> bool:
    try:
        import torch

        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0 and torch.cuda.is_available()
    except Exception:
        return False


@dataclass(frozen=True)
class IndexCheckpoint:
    model_version: str
    dim: int
    count: int
    max_id: int
    id_sum: int
    file_sha256: str

    def matches(self, store: Checkpoint) -> bool:
        return (self.model_version, self.count, self.max_id, self.id_sum) == (
            store.model_version, store.count, store.max_id, store.id_sum)


class VectorIndex:
    def __init__(self, dim: int, use_gpu: str = "auto", gpu_device: int = 0):
        self.dim = dim
        self._master = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = threading.RLock()
        self._ids: set[int] = set()
        # Highest id ever added: ids only grow, so rows past it are new even after deletions.
        self._max_id = 0
        self._gpu_res = None
        self._gpu_index = None
        self._gpu_stale = False
        self.dirty = False
        if use_gpu == "on" or (use_gpu == "auto" and gpu_available()):
            if not gpu_available():
                raise RuntimeError("faiss GPU index requested but faiss has no GPU support or no CUDA device")
            self._gpu_res = faiss.StandardGpuResources()
            self._gpu_device = gpu_device
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._search_loop, name="faiss-search", daemon=True)
        self._worker.start()

    # -- description --------------------------------------------------------------

    @property
    def on_gpu(self) -> bool:
        return self._gpu_res is not None

    @property
    def description(self) -> str:
        return f"faiss-{'gpu' if self.on_gpu else 'cpu'} IndexIDMap2(FlatIP, d={self.dim})"

    def __len__(self) -> int:
        with self._lock:
            return int(self._master.ntotal)

    @property
    def max_id(self) -> int:
        return self._max_id

    def contains(self, embedding_id: int) -> bool:
        with self._lock:
            return embedding_id in self._ids

    # -- mutation -----------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors have shape {vectors.shape}, expected ({len(ids)}, {self.dim})")
        with self._lock:
            fresh = np.array([i not in self._ids for i in ids.tolist()])
            if not fresh.any():
                return
            ids, vectors = ids[fresh], vectors[fresh]
            self._master.add_with_ids(vectors, ids)
            self._ids.update(ids.tolist())
            self._max_id = max(self._max_id, int(ids.max()))
            if self._gpu_index is not None and not self._gpu_stale:
                self._gpu_index.add_with_ids(vectors, ids)
            self.dirty = True

    def remove(self, ids: list[int] | np.ndarray) -> int:
        ids = [int(i) for i in ids]
        with self._lock:
            present = [i for i in ids if i in self._ids]
            if not present:
                return 0
            removed = self._master.remove_ids(np.asarray(present, dtype=np.int64))
            self._ids.difference_update(present)
            if self._gpu_index is not None:
                self._gpu_stale = True
            self.dirty = True
            return int(removed)

    def reset(self) -> None:
        with self._lock:
            self._master.reset()
            self._ids.clear()
            self._max_id = 0
            self._gpu_index = None
            self.dirty = True

    # -- search -------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) each (n, k'), best first; ids of -1 pad when fewer exist."""
        future: Future = Future()
        self._queue.put((np.ascontiguousarray(queries, dtype=np.float32), k, future))
        return future.result()

    def _search_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < 256:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            try:
                k_max = max(k for _, k, _ in batch)
                queries = np.concatenate([q for q, _, _ in batch])
                # On the compute thread, where the models run: faiss and torch share one OpenMP
                # runtime, and a second thread starting parallel work slows both (origin_id.models.compute).
                scores, ids = compute.run(self._search_now, queries, k_max)
                row = 0
                for q, k, future in batch:
                    n = len(q)
                    future.set_result((scores[row:row + n, :k], ids[row:row + n, :k]))
                    row += n
            except Exception as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    def _search_now(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            n = int(self._master.ntotal)
            if n == 0 or k <= 0:
                return (np.full((len(queries), k), -np.inf, np.float32),
                        np.full((len(queries), k), -1, np.int64))
            if self._gpu_res is not None:
                self._sync_gpu()
                index = self._gpu_index
            else:
                index = self._master
            fetch = min(n, k)
            scores, ids = index.search(queries, fetch)
        if fetch < k:
            pad = k - fetch
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores, ids

    def _sync_gpu(self) -> None:
        if self._gpu_index is None or self._gpu_stale:
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, self._gpu_device, self._master)
            self._gpu_stale = False

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)

    # -- persistence ----------------------------------------------------------------

    def save(self, path: Path, checkpoint: Checkpoint) -> IndexCheckpoint:
        """Write index + checkpoint atomically; ``checkpoint`` is the store's at this moment."""
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_name(path.name + ".tmp")
        with self._lock:
            faiss.write_index(self._master, str(tmp))
            self.dirty = False
        os.chmod(tmp, 0o600)
        digest = _sha256_file(tmp)
        meta = IndexCheckpoint(checkpoint.model_version, self.dim, checkpoint.count,
                               checkpoint.max_id, checkpoint.id_sum, digest)
        meta_tmp = _meta_path(path).with_name(_meta_path(path).name + ".tmp")
        meta_tmp.write_text(json.dumps(asdict(meta), indent=2))
        os.chmod(meta_tmp, 0o600)
        os.replace(tmp, path)
        os.replace(meta_tmp, _meta_path(path))
        return meta

    def load_or_rebuild(self, path: Path, store: ReferenceStore, model_version: str) -> str:
        """Load ``path`` if it matches the store, else rebuild. Returns what happened."""
        expected = store.checkpoint(model_version)
        reason = self._try_load(path, expected)
        if reason is None:
            reason = self._spot_check(store, model_version)
        if reason is None:
            log.info("index loaded from %s (%d vectors)", path, len(self))
            return "loaded"
        log.warning("rebuilding index from PostgreSQL: %s", reason)
        self.rebuild(store, model_version)
        self.save(path, store.checkpoint(model_version))
        return f"rebuilt ({reason})"

    def _try_load(self, path: Path, expected: Checkpoint) -> str | None:
        meta_path = _meta_path(path)
        if not path.exists() or not meta_path.exists():
            return "no index file"
        try:
            meta = IndexCheckpoint(**json.loads(meta_path.read_text()))
        except (ValueError, TypeError) as exc:
            return f"unreadable checkpoint ({exc})"
        if meta.dim != self.dim:
            return f"dimension {meta.dim} != {self.dim}"
        if not meta.matches(expected):
            return f"checkpoint {meta} does not match the store {expected}"
        if _sha256_file(path) != meta.file_sha256:
            return "index file is corrupt (hash mismatch)"
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            return f"index file unreadable ({exc})"
        if not isinstance(index, faiss.IndexIDMap2):
            return f"index file holds a {type(index).__name__}, not an IndexIDMap2"
        if index.ntotal != expected.count or index.d != self.dim:
            return "index file content does not match its checkpoint"
        ids = faiss.vector_to_array(index.id_map)
        with self._lock:
            self._master = index
            self._ids = set(ids.tolist())
            self._max_id = int(ids.max()) if len(ids) else 0
            self._gpu_index = None
            self.dirty = False
        return None

    def _spot_check(self, store: ReferenceStore, model_version: str) -> str | None:
        """None when a sample of the loaded vectors is what the store holds, else why not."""
        with self._lock:
            ids = np.fromiter(self._ids, np.int64, len(self._ids))
        if not len(ids):
            return None
        sample = np.random.default_rng().choice(ids, min(SPOT_CHECK, len(ids)), replace=False)
        stored = store.vectors_of(sample.tolist(), model_version)
        with self._lock:
            for embedding_id in sample.tolist():
                vector = stored.get(embedding_id)
                if vector is None or not np.array_equal(vector, self._master.reconstruct(embedding_id)):
                    self.reset()
                    return f"index file vector {embedding_id} is not the store's"
        return None

    def rebuild(self, store: ReferenceStore, model_version: str) -> None:
        with self._lock:
            self.reset()
            for ids, vectors in store.iter_embeddings(model_version):
                self.add(ids, vectors)

    def sync(self, store: ReferenceStore, model_version: str) -> tuple[int, int]:
        """Pick up rows other processes wrote or deleted. Returns (added, removed)."""
        added = 0
        for ids, vectors in store.iter_embeddings(model_version, after_id=self.max_id):
            self.add(ids, vectors)
            added += len(ids)
        removed = 0
        if store.checkpoint(model_version).count != len(self):
            live = set(store.embedding_ids(model_version).tolist())
            with self._lock:
                gone = [i for i in self._ids if i not in live]
            removed = self.remove(gone)
            missing_below = live - self._ids
            if missing_below:  # rows committed out of id order by concurrent writers
                for ids, vectors in store.iter_embeddings(model_version):
                    keep = np.isin(ids, list(missing_below))
                    self.add(ids[keep], vectors[keep])
                added += len(missing_below)
        return added, removed


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
