"""Bulk ingestion: read -> hash -> skip known -> decode + keypoints -> embed -> write -> index.

One pipeline serves ``origin-id ingest`` and the gRPC ``AddReferences`` stream (and,
with a batch of one, ``AddReference``). Items are processed in batches; each batch is
one database transaction (per-item savepoints), written *before* the vectors enter the
index, so a process killed at any point leaves only whole references behind and
re-running the same job skips, by content hash, everything already stored: resumable
and idempotent without a separate job log.

Batching happens here and only here (``gather_batches``): a batch is whatever has
arrived when the previous one is done, up to ``batch_size``, so a stream from a slow or
interactive client (one item, then wait for its answer) is never held back waiting for
a full batch, and a fast source still fills them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import numpy as np

from origin_id.indexer import local_features
from origin_id.indexer.decode import DecodedImage, DecodeLimits, sha256_hex
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.errors import (
    Conflict,
    DatabaseUnavailable,
    ImageError,
    InvalidRequest,
    PermissionDenied,
    Unavailable,
)
from origin_id.indexer.keypoint_index import KeypointIndex
from origin_id.indexer.store import DEFAULT_COLLECTION, NewReference, Reference, ReferenceStore
from origin_id.indexer.validation import (
    MAX_EXTERNAL_ID,
    MAX_SOURCE_URI,
    check_collection,
    check_labels,
    check_text,
)
from origin_id.indexer.vector_index import VectorIndex
from origin_id.models import compute

#: How long a batch waits for more items once it has one (a stream's next message).
BATCH_LINGER_S = 0.02

T = TypeVar("T")


@dataclass
class IngestItem:
    """One image to add. ``read`` defers loading the bytes until its batch runs; an
    ``OSError``, ``InvalidRequest`` or ``PermissionDenied`` it raises is that item's error."""

    read: Callable[[], bytes]
    collection: str = DEFAULT_COLLECTION
    external_id: str = ""
    source_uri: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs) -> IngestItem:
        return cls(read=lambda: data, **kwargs)


@dataclass
class IngestOutcome:
    item: IngestItem
    reference: Reference | None = None
    created: bool = False
    #: Already stored with a vector of the current model: nothing was decoded.
    skipped: bool = False
    error: Exception | None = None


def validate_metadata(item: IngestItem) -> None:
    check_collection(item.collection or DEFAULT_COLLECTION)
    check_text("external_id", item.external_id, MAX_EXTERNAL_ID)
    check_text("source_uri", item.source_uri, MAX_SOURCE_URI)
    check_labels(item.labels)


def gather_batches(items: Iterable[T], size: int, linger_s: float = BATCH_LINGER_S) -> Iterator[list[T]]:
    """``items`` in order, as lists of at most ``size``: each batch takes what is ready.

    A reader thread drains ``items`` into a bounded queue; a batch starts with the next
    item (waiting as long as it takes) and adds whatever arrives within ``linger_s``.
    An exception raised by ``items`` is raised here after the items before it. When the
    caller stops early, the reader stops at its next item."""
    inbox: queue.Queue = queue.Queue(maxsize=size * 4)
    done, stop = object(), threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                inbox.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            put(_Failure(exc))
            return
        put(done)

    threading.Thread(target=read, name="ingest-reader", daemon=True).start()
    try:
        finished = False
        while not finished:
            batch: list[T] = []
            entry = inbox.get()
            while True:
                if entry is done:
                    finished = True
                    break
                if isinstance(entry, _Failure):
                    if batch:
                        yield batch
                    raise entry.error
                batch.append(entry)
                if len(batch) >= size:
                    break
                try:
                    entry = inbox.get(timeout=linger_s)
                except queue.Empty:
                    break
            if batch:
                yield batch
    finally:
        stop.set()


class Decoded(NamedTuple):
    image: DecodedImage
    local_features: bytes  # LocalFeatures.encode() of the image


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class IngestPipeline:
    """Adds images to ``store`` and ``index`` with ``embedder``'s model.

    Nothing else is reached for: the store is the source of truth, the index a cache that
    is updated after each batch commits, and the model version the embedder's bundle
    names is recorded with every vector."""

    def __init__(self, store: ReferenceStore, embedder: Embedder, index: VectorIndex, *,
                 limits: DecodeLimits, batch_size: int = 16, decode_threads: int = 2,
                 keypoints: KeypointIndex | None = None):
        self.store = store
        self.embedder = embedder
        self.index = index
        self.keypoints = keypoints
        self.limits = limits
        self.batch_size = batch_size
        self._decoder = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")

    @property
    def model_version(self) -> str:
        return self.embedder.bundle.version

    def close(self) -> None:
        self._decoder.shutdown(wait=True)

    def run(self, items: Iterable[IngestItem]) -> Iterator[IngestOutcome]:
        """Outcomes in input order, one per item, a batch at a time (``gather_batches``)."""
        for batch in gather_batches(items, self.batch_size):
            yield from self.process(batch)

    def process(self, batch: list[IngestItem]) -> list[IngestOutcome]:
        """One batch: one transaction, one outcome per item (an item's error does not stop the
        others). When the database cannot be reached, every item not yet settled gets an
        ``Unavailable`` error and nothing of the batch is written.

        Under a watched call (``origin_id.models.compute.watching``) each stage first checks
        that the caller still waits: a call abandoned before ``write`` commits nothing."""
        outcomes = [IngestOutcome(item) for item in batch]
        compute.stage("read")
        payloads = self._read(outcomes)
        try:
            self._skip_known(outcomes, payloads)
            compute.stage("decode")
            decoded = self._decode_all(outcomes, payloads)
            if decoded:
                self._embed_and_write(outcomes, decoded)
        except DatabaseUnavailable as exc:
            for outcome in outcomes:
                if outcome.error is None and outcome.reference is None:
                    outcome.error = Unavailable(f"database unavailable, nothing of this batch was written: {exc}")
        return outcomes

    def _read(self, outcomes: list[IngestOutcome]) -> dict[int, bytes]:
        """Each item's bytes, by position; bad metadata and unreadable items get their error."""
        payloads: dict[int, bytes] = {}
        for i, outcome in enumerate(outcomes):
            try:
                validate_metadata(outcome.item)
                payloads[i] = outcome.item.read()
            except (InvalidRequest, OSError, PermissionDenied) as exc:
                outcome.error = exc
        return payloads

    def _skip_known(self, outcomes: list[IngestOutcome], payloads: dict[int, bytes]) -> None:
        """Items already stored (same bytes, same collection, this model) are settled without
        decoding: the resume path of a re-run job."""
        digests = {i: sha256_hex(data) for i, data in payloads.items()}
        by_collection: dict[str, list[int]] = {}
        for i in digests:
            by_collection.setdefault(outcomes[i].item.collection or DEFAULT_COLLECTION, []).append(i)
        for collection, indices in by_collection.items():
            known = self.store.find_by_sha256(collection, [digests[i] for i in indices], self.model_version)
            for i in indices:
                if digests[i] in known:
                    outcomes[i].reference, outcomes[i].skipped = known[digests[i]], True
                    payloads.pop(i)

    def _decode_all(self, outcomes: list[IngestOutcome], payloads: dict[int, bytes]) -> dict[int, Decoded]:
        """Decoded, and their keypoints found, in threads (PIL and OpenCV release the GIL, so
        this runs beside the encoder); undecodable items get their error."""
        pending = sorted(payloads)
        decoded: dict[int, Decoded] = {}
        for i, result in zip(pending, self._decoder.map(self._decode, [payloads[i] for i in pending])):
            if isinstance(result, ImageError):
                outcomes[i].error = result
            else:
                decoded[i] = result
        return decoded

    def _embed_and_write(self, outcomes: list[IngestOutcome], decoded: dict[int, Decoded]) -> None:
        """One embedding batch, one transaction; the vectors enter the index after it commits."""
        compute.stage("embed")
        order = sorted(decoded)
        vectors = self.embedder.reference_vectors([decoded[i].image.image for i in order])
        new = [
            NewReference(
                collection=outcomes[i].item.collection or DEFAULT_COLLECTION, sha256=decoded[i].image.sha256,
                width=decoded[i].image.width, height=decoded[i].image.height, vectors=vectors[row],
                external_id=outcomes[i].item.external_id, source_uri=outcomes[i].item.source_uri,
                labels=dict(outcomes[i].item.labels), local_features=decoded[i].local_features)
            for row, i in enumerate(order)
        ]
        compute.stage("write")
        results = self.store.write(new, self.model_version)
        add_ids, add_vectors, add_collections, keypoint_refs = [], [], [], []
        for i, ref_new, result in zip(order, new, results):
            if result.error:
                outcomes[i].error = Conflict(result.error) if result.error_kind == "conflict" else InvalidRequest(
                    result.error)
                continue
            outcomes[i].reference, outcomes[i].created = result.reference, result.created
            for embedding_id, region in result.embeddings:
                add_ids.append(embedding_id)
                add_vectors.append(ref_new.vectors[region])
                add_collections.append(result.collection_id)
            if result.embeddings and ref_new.local_features:
                keypoint_refs.append((result.reference.id, ref_new.local_features))
        if add_ids:
            self.index.add(np.asarray(add_ids, np.int64), np.stack(add_vectors), np.asarray(add_collections, np.int64))
        if keypoint_refs and self.keypoints is not None:
            self.keypoints.add([r for r, _ in keypoint_refs], [d for _, d in keypoint_refs])

    def _decode(self, data: bytes) -> Decoded | ImageError:
        try:
            image = self.limits.decode(data)
        except ImageError as exc:
            return exc
        return Decoded(image, local_features.extract(image.image).encode())
