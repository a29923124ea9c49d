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


class NotFound(LookupError):
    """No such reference (NOT_FOUND)."""


class EmptyIndex(RuntimeError):
    """A query against an index that holds no references (FAILED_PRECONDITION)."""


class Conflict(Exception):
    """The write would break a uniqueness rule (ALREADY_EXISTS)."""


class NotReady(RuntimeError):
    """The index is not loaded yet (UNAVAILABLE)."""
