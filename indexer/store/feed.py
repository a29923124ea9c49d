"""What the vector index reads from PostgreSQL: a consistent snapshot to build from, and
the changes since, from the change log that triggers keep (migration 0003).

The two meet at a transaction watermark. A build reads every vector of one snapshot (a
REPEATABLE READ transaction, streamed through a server-side cursor: bounded memory at
any table size) and records that snapshot's ``xmin``: every transaction with an older id
had finished, so its rows were in the build. Each later read (``changes``) takes the
change rows of transactions not finished at the previous read (``xid >= xmin``), skips
those already applied, and moves the watermark to its own snapshot's ``xmin``. A writer
that commits late is seen at the next read; the cost follows the changes, not the table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import Connection, Row, case, func, select, text

from origin_id.indexer.store import vector_codec
from origin_id.indexer.store.postgres import PostgresStore, reported
from origin_id.indexer.store.schema import embeddings, index_changes, local_features, references

#: Rows fetched from the server-side cursor at a time.
CHUNK = 20_000


@dataclass
class Chunk:
    ids: np.ndarray  # int64
    collection_ids: np.ndarray  # int64
    vectors: np.ndarray  # float32 (n, dim)


@dataclass
class KeypointChunk:
    reference_ids: np.ndarray  # int64
    data: list[bytes]  # each reference's ``LocalFeatures.encode()``


@dataclass
class Snapshot:
    """Where a build stands in the change log: its watermark and the change rows at or past
    it that the snapshot already holds (they must not be applied again)."""

    xmin: int
    applied: set[int] = field(default_factory=set)


@dataclass
class Changes:
    """Change rows to apply, in order, and where the next read starts."""

    snapshot: Snapshot
    #: (change id, embedding id, "a" or "d"), in change order.
    rows: list[tuple[int, int, str]]
    #: The vectors (and collection ids) of the added embeddings that still exist.
    added: Chunk


def _vectors(rows: Sequence[Row]) -> np.ndarray:
    """The (id, collection id, dim, vector) rows' vectors as float32."""
    return vector_codec.decode_many([r[3] for r in rows], [r[2] for r in rows])


def _watermark(conn: Connection) -> int:
    return int(conn.execute(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")).scalar_one())


def _build_start(conn: Connection, model_version: str) -> Snapshot:
    """Where a build reading in this transaction stands in the change log."""
    xmin = _watermark(conn)
    return Snapshot(xmin, set(conn.execute(select(index_changes.c.id).where(
        index_changes.c.xid >= xmin, index_changes.c.model_version == model_version)).scalars()))


def _fresh_changes(conn: Connection, model_version: str,
                   since: Snapshot) -> tuple[Snapshot, list[tuple[int, int, str]]]:
    """The next read's snapshot and the change rows (id, embedding id, op) not applied since
    ``since``, in order."""
    xmin = _watermark(conn)
    rows = conn.execute(
        select(index_changes.c.id, index_changes.c.xid, index_changes.c.embedding_id, index_changes.c.op)
        .where(index_changes.c.xid >= since.xmin, index_changes.c.model_version == model_version)
        .order_by(index_changes.c.id)).all()
    return (Snapshot(xmin, {r.id for r in rows if r.xid >= xmin}),
            [(r.id, r.embedding_id, r.op) for r in rows if r.id not in since.applied])


def _added(conn: Connection, fresh: list[tuple[int, int, str]], query) -> list[Row]:
    """``query(embedding ids)``'s rows for the added embeddings of ``fresh``, in bounded IN lists."""
    wanted = sorted({eid for _, eid, op in fresh if op == "a"})
    return [row for start in range(0, len(wanted), 10_000) for row in conn.execute(query(wanted[start:start + 10_000]))]


class IndexFeed:
    def __init__(self, store: PostgresStore):
        self.store = store

    @contextlib.contextmanager
    def snapshot(self, model_version: str) -> Iterator[tuple[Snapshot, Iterator[Chunk]]]:
        """(the snapshot's place in the change log, its vectors in chunks), in one transaction."""
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ", stream_results=True,
                                          yield_per=CHUNK)
            with conn.begin():
                yield _build_start(conn, model_version), self._chunks(conn, model_version)

    @staticmethod
    def _chunks(conn: Connection, model_version: str) -> Iterator[Chunk]:
        result = conn.execute(
            select(embeddings.c.id, references.c.collection_id, embeddings.c.dim, embeddings.c.vector)
            .select_from(embeddings.join(references, embeddings.c.reference_id == references.c.id))
            .where(embeddings.c.model_version == model_version))
        for rows in result.partitions(CHUNK):
            yield Chunk(np.fromiter((r[0] for r in rows), np.int64, len(rows)),
                        np.fromiter((r[1] for r in rows), np.int64, len(rows)), _vectors(rows))

    @reported
    def changes(self, model_version: str, since: Snapshot) -> Changes:
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot, fresh = _fresh_changes(conn, model_version, since)
                added = _added(conn, fresh, lambda ids: (
                    select(embeddings.c.id, references.c.collection_id, embeddings.c.dim, embeddings.c.vector)
                    .select_from(embeddings.join(references, embeddings.c.reference_id == references.c.id))
                    .where(embeddings.c.id.in_(ids))))
        chunk = Chunk(np.array([r[0] for r in added], np.int64), np.array([r[1] for r in added], np.int64),
                      _vectors(added))
        return Changes(snapshot, fresh, chunk)

    # -- the keypoint index's reads: same watermark, same change log ---------------------

    @contextlib.contextmanager
    def keypoint_snapshot(self, model_version: str, prefix: CountedPrefix | None = None
                          ) -> Iterator[tuple[Snapshot, int, Iterator[KeypointChunk]]]:
        """(the snapshot's place in the change log, how many references it holds keypoints of,
        their keypoints in chunks) for the references that have a vector of this model, in one
        transaction: the keypoint index's build then follows the change log from the same point
        as a vector index build would. ``prefix``: only each row's first bytes (the keypoint
        index reads the descriptors, not the picture stored after them), cut in the server."""
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ", stream_results=True,
                                          yield_per=CHUNK)
            with conn.begin():
                start = _build_start(conn, model_version)
                served = select(embeddings.c.id).where(
                    embeddings.c.reference_id == local_features.c.reference_id,
                    embeddings.c.model_version == model_version).exists()
                count = conn.execute(select(func.count()).select_from(local_features).where(served)).scalar_one()
                result = conn.execute(select(local_features.c.reference_id, _data(prefix)).where(served))
                yield start, int(count), (
                    KeypointChunk(np.fromiter((r[0] for r in rows), np.int64, len(rows)), [bytes(r[1]) for r in rows])
                    for rows in result.partitions(CHUNK))

    @reported
    def keypoint_changes(self, model_version: str, since: Snapshot,
                         prefix: CountedPrefix | None = None) -> tuple[Snapshot, KeypointChunk]:
        """The next read's snapshot, and the keypoints of the references whose vectors were
        added since ``since`` (those that still exist); ``prefix`` as ``keypoint_snapshot``."""
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                snapshot, fresh = _fresh_changes(conn, model_version, since)
                found = _added(conn, fresh, lambda ids: (
                    select(local_features.c.reference_id, _data(prefix))
                    .where(local_features.c.reference_id.in_(
                        select(embeddings.c.reference_id).where(embeddings.c.id.in_(ids))))))
        chunk = KeypointChunk(np.array([r[0] for r in found], np.int64), [bytes(r[1]) for r in found])
        return snapshot, chunk

    @reported
    def prune(self, older_than_s: float) -> int:
        """Drop change rows older than this (servers further behind rebuild instead)."""
        with self.store.engine.begin() as conn:
            return conn.execute(text("DELETE FROM index_changes WHERE created_at < now() - make_interval(secs => :s)"),
                                {"s": older_than_s}).rowcount


@dataclass(frozen=True)
class CountedPrefix:
    """The first bytes of a row whose length the row says: ``header`` bytes, then ``count``
    items of ``item`` bytes each, ``count`` a little-endian uint16 at byte ``count_at``.
    The store knows no more of the format than that."""

    header: int
    count_at: int
    item: int


def _data(prefix: CountedPrefix | None):
    """The ``local_features.data`` column, or its ``prefix`` (rows shorter than the header
    whole: their reader refuses them)."""
    data = local_features.c.data
    if prefix is None:
        return data
    count = func.get_byte(data, prefix.count_at) + 256 * func.get_byte(data, prefix.count_at + 1)
    cut = func.substring(data, 1, prefix.header + count * prefix.item)
    return case((func.octet_length(data) >= prefix.header, cut), else_=data)
