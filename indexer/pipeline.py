"""Bulk ingestion: read -> hash -> skip known -> decode -> embed -> write -> index.

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
from typing import TypeVar

import numpy as np

from origin_id.indexer.decode import DecodedImage, DecodeLimits, decode_image, sha256_hex
from origin_id.indexer.embedder import Embedder
from origin_id.indexer.errors import Conflict, ImageError, InvalidRequest
from origin_id.indexer.store import DEFAULT_COLLECTION, NewReference, Reference, ReferenceStore
from origin_id.indexer.vector_index import VectorIndex

MAX_NAME = 128
MAX_EXTERNAL_ID = 512
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024
#: How long a batch waits for more items once it has one (a stream's next message).
BATCH_LINGER_S = 0.02

T = TypeVar("T")


@dataclass
class IngestItem:
    """One image to add. ``read`` defers loading the bytes until its batch runs; an
    ``OSError`` or ``InvalidRequest`` it raises is that item's error."""

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
    collection = item.collection or DEFAULT_COLLECTION
    if len(collection) > MAX_NAME or not collection.isprintable():
        raise InvalidRequest(f"collection name must be 1-{MAX_NAME} printable characters")
    if len(item.external_id) > MAX_EXTERNAL_ID:
        raise InvalidRequest(f"external_id is longer than {MAX_EXTERNAL_ID} characters")
    if len(item.labels) > MAX_LABELS:
        raise InvalidRequest(f"{len(item.labels)} labels; at most {MAX_LABELS} are allowed")
    for key, value in item.labels.items():
        if not key or len(key) > MAX_LABEL_KEY or len(value) > MAX_LABEL_VALUE:
            raise InvalidRequest(f"label {key[:40]!r}: keys must be 1-{MAX_LABEL_KEY} characters, "
                                 f"values at most {MAX_LABEL_VALUE}")


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


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class IngestPipeline:
    """Adds images to ``store`` and ``index`` with ``embedder``'s model.

    Nothing else is reached for: the store is the source of truth, the index a cache that
    is updated after each batch commits, and the model version the embedder's bundle
    names is recorded with every vector."""

    def __init__(self, store: ReferenceStore, embedder: Embedder, index: VectorIndex, *,
                 limits: DecodeLimits, batch_size: int = 16, decode_threads: int = 2):
        self.store = store
        self.embedder = embedder
        self.index = index
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
        """One batch: one transaction, one outcome per item (an item's error does not stop the others)."""
        outcomes = [IngestOutcome(item) for item in batch]

        # Read and hash; refuse bad metadata before any work.
        payloads: dict[int, bytes] = {}
        digests: dict[int, str] = {}
        for i, outcome in enumerate(outcomes):
            try:
                validate_metadata(outcome.item)
                data = outcome.item.read()
                payloads[i], digests[i] = data, sha256_hex(data)
            except (InvalidRequest, OSError) as exc:
                outcome.error = exc

        # Skip what is already stored (the resume path: no decode, no embed).
        by_collection: dict[str, list[int]] = {}
        for i in digests:
            by_collection.setdefault(outcomes[i].item.collection or DEFAULT_COLLECTION, []).append(i)
        for collection, indices in by_collection.items():
            known = self.store.find_by_sha256(collection, [digests[i] for i in indices], self.model_version)
            for i in indices:
                if digests[i] in known:
                    outcomes[i].reference, outcomes[i].skipped = known[digests[i]], True
                    payloads.pop(i)

        # Decode in threads (PIL releases the GIL), then embed as one batch.
        pending = sorted(payloads)
        decoded: dict[int, DecodedImage] = {}
        for i, result in zip(pending, self._decoder.map(self._decode, [payloads[i] for i in pending])):
            if isinstance(result, ImageError):
                outcomes[i].error = result
            else:
                decoded[i] = result
        if not decoded:
            return outcomes
        order = sorted(decoded)
        vectors = self.embedder.embed([decoded[i].image for i in order])

        new = [
            NewReference(
                collection=outcomes[i].item.collection or DEFAULT_COLLECTION, sha256=decoded[i].sha256,
                width=decoded[i].width, height=decoded[i].height, vectors=vectors[row:row + 1],
                external_id=outcomes[i].item.external_id, source_uri=outcomes[i].item.source_uri,
                labels=dict(outcomes[i].item.labels))
            for row, i in enumerate(order)
        ]
        results = self.store.write(new, self.model_version)
        add_ids, add_vectors = [], []
        for i, ref_new, result in zip(order, new, results):
            if result.error:
                outcomes[i].error = Conflict(result.error)
                continue
            outcomes[i].reference, outcomes[i].created = result.reference, result.created
            for embedding_id, region in result.embeddings:
                add_ids.append(embedding_id)
                add_vectors.append(ref_new.vectors[region])
        if add_ids:
            self.index.add(np.asarray(add_ids, np.int64), np.stack(add_vectors))
        return outcomes

    def _decode(self, data: bytes) -> DecodedImage | ImageError:
        try:
            return decode_image(data, max_pixels=self.limits.max_pixels, max_side=self.limits.max_side)
        except ImageError as exc:
            return exc
