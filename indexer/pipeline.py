"""Bulk ingestion: read -> hash -> skip known -> decode -> embed -> write -> index.

One pipeline serves ``origin-id ingest`` and the gRPC ``AddReferences``
stream. Items are processed in batches; each batch is one database
transaction (per-item savepoints), written *before* the vectors enter the
index, so a process killed at any point leaves only whole references behind
and re-running the same job skips, by content hash, everything already
stored: resumable and idempotent without a separate job log.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from indexer.decode import DecodedImage, decode_image, sha256_hex
from indexer.errors import Conflict, ImageError, InvalidRequest
from indexer.store import DEFAULT_COLLECTION, NewReference, Reference

MAX_NAME = 128
MAX_EXTERNAL_ID = 512
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024


@dataclass
class IngestItem:
    """One image to add. ``read`` defers loading the bytes until its batch runs."""

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


class IngestPipeline:
    def __init__(self, origin_index, batch_size: int = 16, decode_threads: int = 2):
        self.origin = origin_index
        self.batch_size = batch_size
        self._decoder = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")

    def close(self) -> None:
        self._decoder.shutdown(wait=True)

    def run(self, items: Iterable[IngestItem]) -> Iterator[IngestOutcome]:
        """Outcomes in input order, one per item, a batch at a time."""
        iterator = iter(items)
        while batch := list(itertools.islice(iterator, self.batch_size)):
            yield from self.process(batch)

    def process(self, batch: list[IngestItem]) -> list[IngestOutcome]:
        outcomes = [IngestOutcome(item) for item in batch]
        settings = self.origin.settings
        model_version = self.origin.bundle.version

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
            known = self.origin.store.find_by_sha256(collection, [digests[i] for i in indices], model_version)
            for i in indices:
                if digests[i] in known:
                    outcomes[i].reference, outcomes[i].skipped = known[digests[i]], True
                    payloads.pop(i)

        # Decode in threads (PIL releases the GIL), then embed as one batch.
        pending = sorted(payloads)

        def decode(i: int) -> DecodedImage:
            return decode_image(payloads[i], max_pixels=settings.max_pixels, max_side=settings.max_side)

        decoded: dict[int, DecodedImage] = {}
        for i, result in zip(pending, self._decoder.map(_capture(decode), pending)):
            if isinstance(result, Exception):
                outcomes[i].error = result
            else:
                decoded[i] = result
        if not decoded:
            return outcomes
        order = sorted(decoded)
        vectors = self.origin.embedder.embed([decoded[i].image for i in order])

        new = [
            NewReference(
                collection=outcomes[i].item.collection or DEFAULT_COLLECTION, sha256=decoded[i].sha256,
                width=decoded[i].width, height=decoded[i].height, vectors=vectors[row:row + 1],
                external_id=outcomes[i].item.external_id, source_uri=outcomes[i].item.source_uri,
                labels=dict(outcomes[i].item.labels))
            for row, i in enumerate(order)
        ]
        results = self.origin.store.write(new, model_version)
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
            self.origin.index.add(np.asarray(add_ids, np.int64), np.stack(add_vectors))
        return outcomes


def _capture(fn):
    def wrapped(arg):
        try:
            return fn(arg)
        except ImageError as exc:
            return exc
    return wrapped
