"""Keeping a long-running server's memory where its work needs it (glibc only).

A server decodes images of many sizes on many threads. glibc gives each thread that
allocates concurrently an arena of its own and keeps freed pages in them, so the resident
size creeps up over hours though nothing leaks. ``limit_arenas`` caps the arenas (set
before the worker threads start) and ``trim`` hands freed pages back to the system; the
server calls it periodically. Elsewhere (musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_ARENA_MAX = -8


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()


def limit_arenas(arenas: int = 2) -> bool:
    return bool(_LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, arenas))


def trim() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
