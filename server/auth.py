"""Who is calling, and what they may do: API keys, roles, collections.

A client sends ``authorization: Bearer KEY``. ``Authenticator`` turns the key into a
``Principal`` (UNAUTHENTICATED when it is missing, unknown or revoked), caching what the
database said for ``CACHE_S`` seconds, so a revoked key stops working within that long
and a busy server does not read the key table on every call.

Roles are ordered: ``read`` (IdentifyOrigin, GetReference, ListReferences, GetIndexStats),
``write`` (also AddReference(s)), ``admin`` (also DeleteReference; keys themselves are
managed with ``origin-id keys`` on the database). A key's role holds on its collection,
or on every collection. ``Principal.require`` raises PERMISSION_DENIED where a request
names a collection the key may not use; ``Principal.scope`` is what a request that names
none may see. A reference asked for by id outside the key's collections is NOT_FOUND, not
PERMISSION_DENIED, so ids cannot be walked to learn what exists.

With authentication off (a loopback server by default) every caller is ``ANONYMOUS``,
an admin of every collection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from origin_id.indexer.errors import InvalidRequest, NotReady, PermissionDenied, Unauthenticated
from origin_id.indexer.store import DEFAULT_COLLECTION
from origin_id.indexer.store.keys import ROLES, ApiKeyStore

#: How long a key's lookup (found or not) is reused.
CACHE_S = 5.0


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    #: None: every collection.
    collection: str | None
    key_id: int | None = None
    #: Calls per second this key may make (None: the server's default).
    rate_limit: float | None = None

    def may(self, role: str, collection: str | None = None) -> bool:
        """Whether this key has ``role`` on ``collection`` ("" = the default collection; None =
        the role alone, for requests whose collections are checked one by one or scoped)."""
        if ROLES.index(self.role) < ROLES.index(role):
            return False
        return collection is None or self.collection is None or (collection or DEFAULT_COLLECTION) == self.collection

    def require(self, role: str, collection: str | None = None) -> None:
        if ROLES.index(self.role) < ROLES.index(role):
            raise PermissionDenied(f"this key's role is {self.role}; {role} is needed")
        if not self.may(role, collection):
            raise PermissionDenied("this key may not use that collection")

    @property
    def scope(self) -> frozenset[str] | None:
        """The collections a request naming none may read (None: all)."""
        return None if self.collection is None else frozenset([self.collection])


ANONYMOUS = Principal("anonymous", "admin", None)


class Authenticator:
    def __init__(self, enabled: bool, keys: ApiKeyStore | None = None):
        """``enabled`` False: every caller is ``ANONYMOUS``. ``keys`` may be given later (the
        store opens after the server binds its port); until then no key is accepted."""
        self.enabled = enabled
        self.keys = keys
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]]) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        key = bearer_key(metadata)
        if self.keys is None:
            raise NotReady("the server is still loading; retry shortly")
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_S:
            principal = cached[1]
        else:
            found = self.keys.find(key)
            principal = None if found is None else Principal(found.name or f"key {found.id}", found.role,
                                                             found.collection, found.id, found.rate_limit)
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (now, principal)
        if principal is None:
            raise Unauthenticated("unknown or revoked API key")
        return principal


def bearer_key(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    values = [v for k, v in metadata if k == "authorization"]
    if not values:
        raise Unauthenticated("missing API key: send the metadata 'authorization: Bearer KEY'")
    value = values[0] if isinstance(values[0], str) else values[0].decode("latin-1")
    scheme, _, key = value.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthenticated("the authorization metadata must be 'Bearer KEY'")
    return key.strip()


def parse_role(text: str) -> str:
    if text not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
    return text
