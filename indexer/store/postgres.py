"""``ReferenceStore`` on PostgreSQL (SQLAlchemy 2 Core + psycopg 3)."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Collection, Sequence
from typing import TypeVar

import numpy as np
import psycopg
from sqlalchemy import BigInteger, Engine, and_, any_, bindparam, create_engine, delete, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from origin_id.indexer.errors import DatabaseUnavailable
from origin_id.indexer.store import (
    DEFAULT_COLLECTION,
    NewReference,
    Reference,
    WriteResult,
    vector_codec,
)
from origin_id.indexer.store.bulk_write import write_copied
from origin_id.indexer.store.schema import collections, embeddings, local_features, references

log = logging.getLogger(__name__)
#: Seconds a new connection may take: a database that is down is reported in about this long.
CONNECT_TIMEOUT_S = 2
_UNREACHABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout,
                psycopg.OperationalError, psycopg.InterfaceError)
#: Batches of at least this many items are written with COPY (one round trip per table);
#: smaller ones, and any batch the database refuses a value of, go item by item.
COPY_MIN_ITEMS = 2

F = TypeVar("F", bound=Callable)


def reported(method: F) -> F:
    """The method (or generator) with the driver's connection errors raised as ``DatabaseUnavailable``."""
    def unavailable(exc: Exception) -> DatabaseUnavailable:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()
        return DatabaseUnavailable((first[0] if first else type(exc).__name__)[:200])

    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def generator(*args, **kwargs):
            try:
                yield from method(*args, **kwargs)
            except _UNREACHABLE as exc:
                raise unavailable(exc) from exc
        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except _UNREACHABLE as exc:
            raise unavailable(exc) from exc
    return wrapped  # type: ignore[return-value]


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str) -> Engine:
    return create_engine(normalise_url(url), pool_pre_ping=True, pool_size=8, max_overflow=8, pool_timeout=5,
                         connect_args={"connect_timeout": CONNECT_TIMEOUT_S})


_REFERENCE_COLUMNS = (
    references.c.id, collections.c.name, references.c.external_id, references.c.source_uri,
    references.c.sha256, references.c.width, references.c.height, references.c.labels,
    references.c.created_at,
)


def _reference(row, model_version: str = "") -> Reference:
    return Reference(
        id=row.id, collection=row.name, external_id=row.external_id, source_uri=row.source_uri,
        sha256=row.sha256, width=row.width, height=row.height, labels=dict(row.labels or {}),
        created_at=row.created_at, model_version=model_version)


def _select_references():
    return select(*_REFERENCE_COLUMNS).select_from(
        references.join(collections, references.c.collection_id == collections.c.id))


class PostgresStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._collection_ids: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        return cls(make_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        """Whether PostgreSQL accepts a new connection now (within ``CONNECT_TIMEOUT_S``). Not a
        pooled one: when the server process dies, backends already connected can answer for a
        while, and only a new connection tells that the database is gone."""
        url = self.engine.url
        try:
            with psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                 dbname=url.database, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error as exc:
            log.debug("database ping failed: %s", exc)
            return False
        except DBAPIError:
            return False
        except _UNREACHABLE:
            return False

    def reconnect(self, url: str | None = None) -> None:
        """Drop every pooled connection (they died with the server); with ``url``, connect
        there from now on (a restarted embedded cluster may listen on another port)."""
        old = self.engine
        if url is not None and url != old.url.render_as_string(hide_password=False):
            self.engine = make_engine(url)
        old.dispose()

    def is_superuser(self) -> bool:
        with self.engine.connect() as conn:
            return bool(conn.exec_driver_sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar())

    # -- writes -------------------------------------------------------------------

    def _collection_ids_for(self, conn, names: set[str]) -> dict[str, int]:
        missing = sorted(names - self._collection_ids.keys())
        if missing:
            conn.execute(pg_insert(collections).on_conflict_do_nothing(index_elements=["name"]),
                         [{"name": n} for n in missing])
        ids = {n: self._collection_ids[n] for n in names if n in self._collection_ids}
        if missing:
            rows = conn.execute(select(collections.c.name, collections.c.id).where(collections.c.name.in_(missing)))
            ids.update({name: cid for name, cid in rows})
        return ids

    @reported
    def write(self, items: Sequence[NewReference], model_version: str) -> list[WriteResult]:
        if len(items) >= COPY_MIN_ITEMS:
            try:
                return self._write_copied(items, model_version)
            except (DBAPIError, psycopg.Error) as exc:
                if isinstance(exc, _UNREACHABLE) or getattr(exc, "connection_invalidated", False):
                    raise
                # One value the database will not store fails the whole COPY: find it item by item.
                first = str(getattr(exc, "orig", exc)).strip().splitlines()
                log.info("bulk write refused (%s); writing the batch item by item", first[0] if first else exc)
        return self._write_each(items, model_version)

    def _write_copied(self, items: Sequence[NewReference], model_version: str) -> list[WriteResult]:
        with self.engine.begin() as conn:
            cids = self._collection_ids_for(conn, {i.collection or DEFAULT_COLLECTION for i in items})
            outcomes = write_copied(conn, items, cids, model_version)
            ids = sorted({o.reference_id for o in outcomes if o.reference_id is not None})
            rows = {row.id: row for row in conn.execute(_select_references().where(
                references.c.id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))))}
        self._collection_ids.update(cids)
        return [WriteResult(None, False, error=_external_id_taken(item)) if o.reference_id is None else
                WriteResult(_reference(rows[o.reference_id], model_version), o.created, o.embeddings,
                            collection_id=cids[item.collection or DEFAULT_COLLECTION])
                for item, o in zip(items, outcomes, strict=True)]

    def _write_each(self, items: Sequence[NewReference], model_version: str) -> list[WriteResult]:
        results: list[WriteResult] = []
        with self.engine.begin() as conn:
            cids = self._collection_ids_for(conn, {i.collection or DEFAULT_COLLECTION for i in items})
            for item in items:
                # A savepoint per item: a refused item rolls back alone, the batch commits.
                savepoint = conn.begin_nested()
                try:
                    results.append(self._write_one(conn, item, cids[item.collection or DEFAULT_COLLECTION],
                                                   model_version))
                    savepoint.commit()
                except IntegrityError as exc:
                    savepoint.rollback()
                    results.append(WriteResult(None, False, error=_conflict_message(item, exc)))
                except DBAPIError as exc:
                    if exc.connection_invalidated or isinstance(exc, _UNREACHABLE):
                        raise
                    # Refused for this item alone (a value the database will not store): the others go on.
                    savepoint.rollback()
                    log.warning("database refused an item of collection %r: %s", item.collection, exc.orig)
                    results.append(WriteResult(None, False, error="the database refused this item",
                                               error_kind="refused"))
        self._collection_ids.update(cids)  # only ids of committed rows are cached
        return results

    def _write_one(self, conn, item: NewReference, cid: int, model_version: str) -> WriteResult:
        new_id = conn.execute(
            pg_insert(references).values(
                collection_id=cid, external_id=item.external_id, source_uri=item.source_uri,
                sha256=item.sha256, width=item.width, height=item.height, labels=item.labels,
            ).on_conflict_do_nothing(index_elements=["collection_id", "sha256"]).returning(references.c.id)
        ).scalar_one_or_none()
        created = new_id is not None
        if created:
            ref_id = new_id
        else:
            ref_id = conn.execute(select(references.c.id).where(
                references.c.collection_id == cid, references.c.sha256 == item.sha256)).scalar_one()
        # Vectors of this model not yet stored (all of them for a new reference;
        # none for a re-add; all again after a model change).
        have = set(conn.execute(select(embeddings.c.region).where(
            embeddings.c.reference_id == ref_id, embeddings.c.model_version == model_version)).scalars())
        rows = [
            {"reference_id": ref_id, "model_version": model_version, "region": region,
             "dim": int(vec.shape[0]), "vector": vector_codec.encode(vec)}
            for region, vec in enumerate(item.vectors) if region not in have
        ]
        written: tuple[tuple[int, int], ...] = ()
        if rows:
            # DO NOTHING: a concurrent writer of the same image may have stored the vector first.
            written = tuple((eid, region) for eid, region in conn.execute(
                pg_insert(embeddings).on_conflict_do_nothing(
                    index_elements=["reference_id", "model_version", "region"])
                .returning(embeddings.c.id, embeddings.c.region), rows))
        if item.local_features:
            # DO NOTHING: a re-add, or a concurrent writer of the same image, stored them first.
            conn.execute(pg_insert(local_features).values(reference_id=ref_id, data=item.local_features)
                         .on_conflict_do_nothing(index_elements=["reference_id"]))
        row = conn.execute(_select_references().where(references.c.id == ref_id)).one()
        return WriteResult(_reference(row, model_version), created, written, collection_id=cid)

    @reported
    def delete(self, reference_id: int) -> tuple[Reference, list[int]] | None:
        with self.engine.begin() as conn:
            row = conn.execute(_select_references().where(references.c.id == reference_id)
                               .with_for_update(of=references)).one_or_none()
            if row is None:
                return None
            ids = list(conn.execute(delete(embeddings).where(embeddings.c.reference_id == reference_id)
                                    .returning(embeddings.c.id)).scalars())
            conn.execute(delete(references).where(references.c.id == reference_id))
        return _reference(row), ids

    # -- reads --------------------------------------------------------------------

    @reported
    def find_by_sha256(self, collection: str, digests: Sequence[str], model_version: str) -> dict[str, Reference]:
        if not digests:
            return {}
        query = (
            _select_references()
            .where(collections.c.name == (collection or DEFAULT_COLLECTION),
                   references.c.sha256.in_(list(digests)),
                   select(embeddings.c.id).where(and_(embeddings.c.reference_id == references.c.id,
                                                      embeddings.c.model_version == model_version)).exists(),
                   # Stored before keypoints were (migration 0004): not done yet, so that
                   # ingesting the same files again adds them.
                   select(local_features.c.reference_id).where(
                       local_features.c.reference_id == references.c.id).exists())
        )
        with self.engine.connect() as conn:
            return {row.sha256: _reference(row, model_version) for row in conn.execute(query)}

    @reported
    def get(self, reference_id: int) -> Reference | None:
        with self.engine.connect() as conn:
            row = conn.execute(_select_references().where(references.c.id == reference_id)).one_or_none()
        return None if row is None else _reference(row)

    @reported
    def has_collection(self, name: str) -> bool:
        if name in self._collection_ids:
            return True
        with self.engine.connect() as conn:
            return conn.execute(select(collections.c.id).where(collections.c.name == name)).first() is not None

    @reported
    def list_references(self, collections_: Collection[str] | None, after_id: int, limit: int) -> list[Reference]:
        query = _select_references().where(references.c.id > after_id).order_by(references.c.id).limit(limit)
        if collections_ is not None:
            query = query.where(collections.c.name.in_(sorted(collections_)))
        with self.engine.connect() as conn:
            return [_reference(row) for row in conn.execute(query)]

    @reported
    def get_by_external_id(self, collection: str, external_id: str) -> Reference | None:
        with self.engine.connect() as conn:
            row = conn.execute(_select_references().where(
                collections.c.name == (collection or DEFAULT_COLLECTION),
                references.c.external_id == external_id)).one_or_none()
        return None if row is None else _reference(row)

    @reported
    def count_embeddings(self, model_version: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(embeddings.c.model_version == model_version))
                       .scalar_one())

    @reported
    def sample_vectors(self, model_version: str, n: int) -> np.ndarray:
        """About ``n`` vectors drawn at random (table blocks), for training an index."""
        total = max(1, self.count_embeddings(model_version))
        percent = min(100.0, 100.0 * 1.5 * n / total)
        with self.engine.connect() as conn:
            rows = conn.execute(text(
                f"SELECT dim, vector FROM embeddings TABLESAMPLE SYSTEM ({percent:.6f}) "
                "WHERE model_version = :v LIMIT :n"), {"v": model_version, "n": n}).all()
        return vector_codec.decode_many([r.vector for r in rows], [r.dim for r in rows])

    @reported
    def collection_ids(self, names: Collection[str]) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(collections.c.name, collections.c.id)
                                     .where(collections.c.name.in_(sorted(names)))).all())

    @reported
    def candidates(self, embedding_ids: Sequence[int]) -> dict[int, tuple[Reference, np.ndarray]]:
        """The references behind embedding ids, with the stored vector of each (deleted ones
        are absent), for scoring candidates exactly."""
        return self._candidates(embeddings.c.id, embedding_ids)

    @reported
    def reference_candidates(self, reference_ids: Sequence[int],
                             model_version: str) -> dict[int, tuple[Reference, np.ndarray]]:
        """As ``candidates``, for every vector of this model of these references."""
        return self._candidates(embeddings.c.reference_id, reference_ids, model_version)

    def _candidates(self, column, ids: Sequence[int],
                    model_version: str | None = None) -> dict[int, tuple[Reference, np.ndarray]]:
        out: dict[int, tuple[Reference, np.ndarray]] = {}
        ids = sorted({int(i) for i in ids})
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 10_000):  # bounded IN lists
                query = (select(embeddings.c.id.label("embedding_id"), embeddings.c.model_version,
                                embeddings.c.dim, embeddings.c.vector, *_REFERENCE_COLUMNS)
                         .select_from(embeddings.join(references, embeddings.c.reference_id == references.c.id)
                                      .join(collections, references.c.collection_id == collections.c.id))
                         .where(column.in_(ids[start:start + 10_000])))
                if model_version is not None:
                    query = query.where(embeddings.c.model_version == model_version)
                for row in conn.execute(query):
                    out[row.embedding_id] = (_reference(row, row.model_version),
                                             vector_codec.decode(row.vector, row.dim))
        return out

    @reported
    def local_features_of(self, reference_ids: Sequence[int]) -> dict[int, bytes]:
        if not reference_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(local_features.c.reference_id, local_features.c.data).where(
                local_features.c.reference_id == any_(bindparam("ids", list(reference_ids),
                                                                type_=ARRAY(BigInteger)))))
            return {int(ref_id): bytes(data) for ref_id, data in rows}

    @reported
    def vectors_of(self, embedding_ids: Sequence[int], model_version: str) -> dict[int, np.ndarray]:
        if not embedding_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(embeddings.c.id, embeddings.c.dim, embeddings.c.vector).where(
                embeddings.c.id.in_([int(i) for i in embedding_ids]), embeddings.c.model_version == model_version))
            return {row.id: vector_codec.decode(row.vector, row.dim) for row in rows}

    @reported
    def stats(self, collections_: Collection[str] | None = None) -> dict[str, int]:
        query = (select(collections.c.name, func.count(references.c.id))
                 .select_from(collections.outerjoin(references, references.c.collection_id == collections.c.id))
                 .group_by(collections.c.name).order_by(collections.c.name))
        if collections_ is not None:
            query = query.where(collections.c.name.in_(sorted(collections_)))
        with self.engine.connect() as conn:
            return {name: int(n) for name, n in conn.execute(query)}


def _external_id_taken(item: NewReference) -> str:
    return (f"external_id {item.external_id!r} already names a different image in collection "
            f"{item.collection or DEFAULT_COLLECTION!r}")


def _conflict_message(item: NewReference, exc: IntegrityError) -> str:
    text = str(exc.orig)
    if "uq_reference_collection_external_id" in text:
        return _external_id_taken(item)
    log.warning("integrity error writing %s: %s", item.sha256, text)
    return f"conflicting write: {text.splitlines()[0]}"
