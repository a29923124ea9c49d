"""API keys in PostgreSQL: only a SHA-256 of each key is stored.

A key is ``oid_`` and 43 random URL-safe characters (256 bits), shown once when it is
made. Being random, it needs no slow password hash: a SHA-256 cannot be reversed, and a
database dump gives nobody a working key. Each key has one role (``read`` < ``write`` <
``admin``) on one collection, or on all collections (``collection`` None), and an
optional rate limit of its own (calls per second). Revoking keeps the row, so the list
shows what existed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, insert, select, update

from origin_id.indexer.errors import InvalidRequest, NotFound
from origin_id.indexer.store.postgres import PostgresStore, reported
from origin_id.indexer.store.schema import api_keys
from origin_id.indexer.validation import check_collection, check_text

ROLES = ("read", "write", "admin")
PREFIX = "oid_"


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    role: str
    #: None: every collection.
    collection: str | None
    rate_limit: float | None
    created_at: datetime
    revoked_at: datetime | None = None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key(row) -> ApiKey:
    return ApiKey(row.id, row.name, row.role, row.collection, row.rate_limit, row.created_at, row.revoked_at)


class ApiKeyStore:
    def __init__(self, store: PostgresStore):
        """On ``store``'s connections (which it may replace when the database comes back)."""
        self.store = store

    @property
    def engine(self) -> Engine:
        return self.store.engine

    @reported
    def create(self, role: str, collection: str | None, name: str = "",
               rate_limit: float | None = None) -> tuple[ApiKey, str]:
        """A new key: (its record, the key itself, which is not stored and cannot be shown again)."""
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        if collection is not None:
            check_collection(collection, required=True)
        check_text("name", name, 128)
        if rate_limit is not None and not rate_limit > 0:
            raise InvalidRequest("a rate limit must be a positive number of calls per second")
        key = PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            row = conn.execute(insert(api_keys).values(
                name=name, key_sha256=key_digest(key), role=role, collection=collection, rate_limit=rate_limit,
            ).returning(*api_keys.c)).one()
        return _key(row), key

    @reported
    def list(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            return [_key(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.id))]

    @reported
    def revoke(self, key_id: int) -> ApiKey:
        with self.engine.begin() as conn:
            row = conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                               .values(revoked_at=func.now()).returning(*api_keys.c)).one_or_none()
        if row is None:
            raise NotFound(f"no active key with id {key_id}")
        return _key(row)

    @reported
    def find(self, key: str) -> ApiKey | None:
        """The active key ``key`` is, or None."""
        if not key.startswith(PREFIX) or len(key) > 128:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_sha256 == key_digest(key),
                                                      api_keys.c.revoked_at.is_(None))).one_or_none()
        return None if row is None else _key(row)
