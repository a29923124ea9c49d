"""Keypoint index: origin candidates found by local features, for copies the vectors miss.

The ID2 vectors rank a crop, a tilted or framed copy low when the edit moves the picture
far from every indexed region, and geometric verification (``local_features``) can only
prove a copy of the candidates it is given. This index gives it candidates: every
reference's ORB descriptors in one FAISS binary index. Each of a query's descriptors (of
each of its views, ``QueryFeatures``) looks up its nearest stored descriptors, and a reference gets one
vote from each query descriptor that found one of its own within ``MAX_DISTANCE`` bits.
The references with most votes are verified beside the vectors' best candidates; a
lookup cannot decide anything by itself.

Its life follows the vector index's, in a simpler form: built from a store snapshot when
the service opens (``IndexFeed.keypoint_snapshot``), kept current from the same change
log (``IndexFeed.keypoint_changes``: other processes' writes) and by this process's
ingest, rebuilt when its size outgrows the index kind it was built as, or when the vector
index is rebuilt (then deleted references' descriptors leave it too). It is never saved:
a build reads the keypoints from PostgreSQL, the source of truth. Deleted references may
still win votes until then; their candidates are read back from the store, where they no
longer exist, so they never reach an answer.

Memory: 32 bytes of descriptor, 8 of list id and 8 of owner per keypoint, up to
``MAX_KEYPOINTS`` (500) a reference: about 15 MB per 1,000 references at this project's
average of ~310 (docs/scale.md); the ``keypoint_candidates`` setting at 0 leaves it out.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable

import faiss
import numpy as np

from origin_id.indexer.local_features import (
    BYTES_PER_KEYPOINT,
    COUNT_OFFSET,
    DESCRIPTOR_BYTES,
    HEADER_BYTES,
    LocalFeatures,
    QueryFeatures,
)
from origin_id.indexer.store.feed import CountedPrefix, IndexFeed, KeypointChunk, Snapshot
from origin_id.models import compute

log = logging.getLogger(__name__)

BITS = DESCRIPTOR_BYTES * 8
#: A stored descriptor this close (of 256 bits) counts as the same keypoint: ORB matches of
#: a copy mostly lie under 50 bits, unrelated descriptors around 128.
MAX_DISTANCE = 64
#: Stored descriptors looked up per query descriptor (near-duplicate references each keep one).
NEIGHBOURS = 4
#: Up to this many descriptors are scanned exactly; more are split into inverted lists.
FLAT_LIMIT = 100_000
#: Inverted lists scanned per lookup: a copy's descriptors lie close to its origin's, in the
#: lists nearest them, so a few suffice (8 against 16: docs/evaluation.md).
NPROBE = 8
#: An inverted-list index is rebuilt once it holds this many times what it was trained for.
GROWTH_REBUILD = 4.0
#: Training points per inverted list (FAISS's k-means wants at least 39).
TRAIN_PER_LIST = 40


#: The stored keypoints' bytes up to the last descriptor: all this index reads of a row.
_KEYPOINTS = CountedPrefix(HEADER_BYTES, COUNT_OFFSET, BYTES_PER_KEYPOINT)


def _descriptors(data: bytes) -> np.ndarray | None:
    try:
        return LocalFeatures.decode(data, keypoints_only=True).descriptors
    except ValueError:
        return None


def list_count(descriptors: int) -> int:
    """Inverted lists for this many descriptors: about their square root, a power of two."""
    return int(min(8192, max(256, 2 ** round(math.log2(max(descriptors, 1) ** 0.5)))))


class KeypointIndex:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index: faiss.IndexBinary = faiss.IndexBinaryFlat(BITS)
        self._owners = np.zeros(1024, np.int64)  # reference id of each stored descriptor, in add order
        self._known: set[int] = set()
        self._trained_for = 0  # descriptors the inverted lists were sized for; 0 = exact index
        self._snapshot = Snapshot(0)

    def __len__(self) -> int:
        """References held."""
        with self._lock:
            return len(self._known)

    @property
    def descriptors(self) -> int:
        with self._lock:
            return int(self._index.ntotal)

    def description(self) -> str:
        with self._lock:
            kind = f"IVF{self._index.nlist}" if self._trained_for else "exact"
            return f"keypoints: {len(self._known)} references, {self._index.ntotal} descriptors ({kind})"

    # -- writes -------------------------------------------------------------------

    def add(self, reference_ids, data: list[bytes]) -> int:
        """Stored keypoints (``LocalFeatures.encode()``) of references not held yet; rows this
        code cannot read are left out (their references stay verifiable by the vectors'
        candidates, and the log says so). Returns the references added."""
        fresh: list[tuple[int, np.ndarray]] = []
        with self._lock:
            held = [r in self._known for r in np.asarray(reference_ids, np.int64).tolist()]
        seen: set[int] = set()
        for ref_id, blob, known in zip(np.asarray(reference_ids, np.int64).tolist(), data, held):
            if known or ref_id in seen:
                continue
            seen.add(ref_id)
            try:
                features = LocalFeatures.decode(blob, keypoints_only=True)
            except ValueError as exc:
                log.warning("reference %d: unreadable local features (%s)", ref_id, exc)
                continue
            fresh.append((ref_id, features.descriptors))
        if not fresh:
            return 0
        descriptors = np.ascontiguousarray(np.concatenate([d for _, d in fresh]), np.uint8)
        owners = np.concatenate([np.full(len(d), r, np.int64) for r, d in fresh])
        compute.run(self._append, descriptors, owners, [r for r, _ in fresh])
        return len(fresh)

    def _append(self, descriptors: np.ndarray, owners: np.ndarray, references: list[int]) -> None:
        with self._lock:
            references = [r for r in references if r not in self._known]
            keep = np.isin(owners, references)
            descriptors, owners = descriptors[keep], owners[keep]
            start = int(self._index.ntotal)
            if start + len(owners) > len(self._owners):
                grown = np.zeros(max(2 * len(self._owners), start + len(owners)), np.int64)
                grown[:start] = self._owners[:start]
                self._owners = grown
            if len(owners):
                self._index.add(descriptors)
                self._owners[start:start + len(owners)] = owners
            self._known.update(references)

    def forget(self, reference_id: int) -> None:
        """A reference this process deleted: no longer held (its descriptors leave at the next
        build; until then their votes find nothing in the store)."""
        with self._lock:
            self._known.discard(int(reference_id))

    # -- lookups ------------------------------------------------------------------

    def vote(self, query: QueryFeatures, limit: int) -> list[int]:
        """The ids of the ``limit`` references with most votes from the query's keypoints."""
        views = [v.descriptors for v in query.views if len(v)]
        if not views or limit <= 0:
            return []
        return compute.run(self._vote, np.ascontiguousarray(np.concatenate(views), np.uint8), limit)

    def _vote(self, descriptors: np.ndarray, limit: int) -> list[int]:
        with self._lock:
            if not self._index.ntotal:
                return []
            distances, positions = self._index.search(descriptors, min(NEIGHBOURS, int(self._index.ntotal)))
            owners = self._owners
        close = (positions >= 0) & (distances <= MAX_DISTANCE)
        rows = np.broadcast_to(np.arange(len(descriptors))[:, None], positions.shape)[close]
        # One vote per query descriptor and reference: near-duplicate keypoints of one
        # reference must not outvote a reference that matches more of the query.
        pairs = np.unique(np.stack([rows, owners[positions[close]]], 1), axis=0)
        if not len(pairs):
            return []
        references, votes = np.unique(pairs[:, 1], return_counts=True)
        order = np.lexsort((references, -votes))[:limit]
        return references[order].tolist()

    # -- builds and the change log --------------------------------------------------

    def rebuild(self, feed: IndexFeed, model_version: str) -> None:
        """A new index of every stored reference's keypoints, streamed from one snapshot and
        swapped in when ready; then the changes written meanwhile."""
        started = time.monotonic()
        with feed.keypoint_snapshot(model_version, _KEYPOINTS) as (snapshot, references, chunks):
            staged = KeypointIndex.built(chunks, references)
        with self._lock, staged._lock:
            self._index, self._owners, self._known = staged._index, staged._owners, staged._known
            self._trained_for, self._snapshot = staged._trained_for, snapshot
        self.sync(feed, model_version)
        log.info("%s, built in %.1f s", self.description(), time.monotonic() - started)

    @classmethod
    def built(cls, chunks: Iterable[KeypointChunk], references: int) -> KeypointIndex:
        """An index of ``references`` references' keypoints, read in chunks. Past
        ``FLAT_LIMIT`` descriptors (estimated from the first chunk) the inverted lists are
        trained on the first chunk's descriptors."""
        index = cls()
        for chunk in chunks:
            if not index._trained_for and not index._index.ntotal:
                sample = [d for d in (_descriptors(b) for b in chunk.data) if d is not None]
                per_reference = sum(len(d) for d in sample) / max(len(chunk.data), 1)
                if references * per_reference > FLAT_LIMIT and sample:
                    index._train(np.concatenate(sample), int(references * per_reference))
            for start in range(0, len(chunk.data), 2000):  # in pieces: queries interleave on the compute thread
                index.add(chunk.reference_ids[start:start + 2000], chunk.data[start:start + 2000])
        return index

    def _train(self, points: np.ndarray, total: int) -> None:
        nlist = list_count(total)
        wanted = min(len(points), TRAIN_PER_LIST * nlist)
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(BITS), BITS, nlist)
        index.nprobe = NPROBE
        sample = points[np.random.default_rng(0).permutation(len(points))[:wanted]]
        compute.run(index.train, np.ascontiguousarray(sample))
        self._index, self._trained_for = index, total

    def needs_rebuild(self) -> bool:
        with self._lock:
            n = int(self._index.ntotal)
            return n > FLAT_LIMIT if not self._trained_for else n > GROWTH_REBUILD * self._trained_for

    def sync(self, feed: IndexFeed, model_version: str) -> int:
        """Add the keypoints of references other processes (and this one) wrote since the last
        read; returns the references added."""
        with self._lock:
            since = self._snapshot
        snapshot, chunk = feed.keypoint_changes(model_version, since, _KEYPOINTS)
        added = self.add(chunk.reference_ids, chunk.data)
        with self._lock:
            self._snapshot = snapshot
        return added
