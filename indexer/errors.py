"""Errors the service reports to callers, each mapping to one gRPC status.

The server translates these into status codes in one place
(``origin_id.server.servicer``); anything else escaping a handler is a bug and is
reported as INTERNAL without losing the process.
"""

from __future__ import annotations


class InvalidRequest(ValueError):
    """The request is malformed or out of range (INVALID_ARGUMENT)."""


class ImageError(InvalidRequest):
    """The bytes are not an image this service accepts (INVALID_ARGUMENT)."""


class ImageTooLarge(ImageError):
    """The image declares more pixels or a longer side than allowed (RESOURCE_EXHAUSTED)."""


class Unauthenticated(Exception):
    """No API key, or one that is unknown or revoked (UNAUTHENTICATED)."""


class PermissionDenied(Exception):
    """The key's role or collection does not allow this (PERMISSION_DENIED)."""


class NotFound(LookupError):
    """No such reference (NOT_FOUND)."""


class EmptyIndex(RuntimeError):
    """A query against an index that holds no references (FAILED_PRECONDITION)."""


class Conflict(Exception):
    """The write would break a uniqueness rule (ALREADY_EXISTS)."""


class Unavailable(RuntimeError):
    """The service cannot answer now; the same request may succeed later (UNAVAILABLE)."""


class NotReady(Unavailable):
    """The index is not loaded yet (UNAVAILABLE)."""


class DatabaseUnavailable(Unavailable):
    """PostgreSQL cannot be reached (UNAVAILABLE); raised by the store in place of its
    driver's connection errors, so callers need not know SQLAlchemy's."""


class Abandoned(Exception):
    """The caller cancelled the call or its deadline passed: the work stops where it is
    (``cancelled`` says which; the gRPC status is CANCELLED or DEADLINE_EXCEEDED)."""

    def __init__(self, stage: str, cancelled: bool):
        super().__init__(f"{'cancelled' if cancelled else 'deadline exceeded'} before {stage}")
        self.stage, self.cancelled = stage, cancelled
