"""The reference store: PostgreSQL is the source of truth.

``ReferenceStore`` is the interface the rest of the code uses; ``PostgresStore``
implements it with SQLAlchemy 2 + psycopg 3 on the schema that the Alembic
migrations in ``migrations/`` own. The vector index is only a cache of the
``embeddings`` table, built from it and kept current through its change log
(``feed.IndexFeed``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np

DEFAULT_COLLECTION = "default"


@dataclass(frozen=True)
class Reference:
    id: int
    collection: str
    external_id: str
    source_uri: str
    sha256: str
    width: int
    height: int
    labels: dict[str, str]
    created_at: datetime
    model_version: str = ""


@dataclass
class NewReference:
    """A decoded, embedded image ready to be written."""

    collection: str
    sha256: str
    width: int
    height: int
    vectors: np.ndarray  # (n_regions, dim) float32; row 0 is the whole image
    external_id: str = ""
    source_uri: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    #: ``LocalFeatures.encode()`` of the image; empty: none (the reference is not verifiable).
    local_features: bytes = b""


@dataclass(frozen=True)
class WriteResult:
    reference: Reference | None
    created: bool
    #: (embedding id, region) of the vector rows this call wrote, to add to the index.
    embeddings: tuple[tuple[int, int], ...] = ()
    #: Set when the item was refused: its external_id names another image ("conflict"), or the
    #: database would not store a value of it ("refused").
    error: str = ""
    error_kind: str = "conflict"
    #: The id of the reference's collection (the index files vectors by it).
    collection_id: int = 0


class ReferenceStore(Protocol):
    def write(self, items: Sequence[NewReference], model_version: str) -> list[WriteResult]:
        """Insert references and their vectors; one result per item, in order.
        Each item is atomic: either the reference and all its vectors are stored or nothing."""

    def find_by_sha256(self, collection: str, digests: Sequence[str], model_version: str) -> dict[str, Reference]:
        """The references of these digests in the collection that have a vector of this model
        and their keypoints: those need nothing more (a re-run of ingest skips them)."""

    def get(self, reference_id: int) -> Reference | None: ...

    def has_collection(self, name: str) -> bool: ...

    def list_references(self, collections: Collection[str] | None, after_id: int, limit: int) -> list[Reference]:
        """References with ids above ``after_id`` in id order, at most ``limit``, of these
        collections (None = all)."""

    def get_by_external_id(self, collection: str, external_id: str) -> Reference | None: ...

    def delete(self, reference_id: int) -> tuple[Reference, list[int]] | None:
        """Delete a reference and its vectors; returns it and the embedding ids removed."""

    def candidates(self, embedding_ids: Sequence[int]) -> dict[int, tuple[Reference, np.ndarray]]:
        """The current references behind embedding ids, each with its stored vector."""

    def reference_candidates(self, reference_ids: Sequence[int],
                             model_version: str) -> dict[int, tuple[Reference, np.ndarray]]:
        """As ``candidates`` (by embedding id), for every vector of this model of these references."""

    def collection_ids(self, names: Collection[str]) -> dict[str, int]: ...

    def local_features_of(self, reference_ids: Sequence[int]) -> dict[int, bytes]:
        """The stored keypoints of these references (those that have them)."""

    def count_embeddings(self, model_version: str) -> int: ...

    def sample_vectors(self, model_version: str, n: int) -> np.ndarray: ...

    def vectors_of(self, embedding_ids: Sequence[int], model_version: str) -> dict[int, np.ndarray]:
        """The stored vectors (float32) of these embedding ids of this model."""

    def stats(self, collections: Collection[str] | None = None) -> dict[str, int]:
        """Reference count per collection (of these collections, None = all)."""

    def close(self) -> None: ...
