"""One thread for a service process's parallel numeric work (torch models, FAISS searches).

Why one thread: torch and faiss share one OpenMP runtime (faiss binds to the
libgomp that torch loads), and libgomp gives every thread that starts parallel
work a team of worker threads of its own. Once a process has more of those
threads than CPU cores, libgomp stops letting idle workers spin between
parallel regions ("throttled" spinning), so each of the thousands of small
parallel regions in a model pass waits for a sleeping worker to be woken. A
gRPC server runs requests on a pool of threads and searches FAISS on another,
so every query paid for it (the measurement: docs/benchmark-history.md, "One
compute thread").

``enable()`` starts the thread (``OriginIndex.open`` does, before loading the
models, so even their first use happens there); from then on ``run(fn, ...)``
executes ``fn`` on it and returns its result or raises its exception. Until
then, and when called from the compute thread itself, ``run`` calls ``fn``
inline, so training scripts and tests that drive the models from their main
thread keep one team without a hop. The thread also serialises model use, as
the bundle's lock does when ``run`` is inline.

Code that runs on the compute thread must not wait for work it hands to
another thread that itself calls ``run`` (the FAISS search worker does): it
would wait for itself.

A request's work can wait in the thread's queue behind others. ``watching(call)``
ties the code below it to a ``CallWatch`` (the server's view of one gRPC call):
``stage(name)`` marks where a request's work stands (for per-stage timings) and
raises the watch's error when the caller has gone (cancelled, or past its deadline),
and ``run`` checks the watch again when a job reaches the front of the queue, so a
queue of abandoned calls drains without computing anything.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Protocol, TypeVar

T = TypeVar("T")

class CallWatch(Protocol):
    def check(self) -> None:
        """Raise when the caller no longer wants the answer."""

    def stage(self, name: str) -> None:
        """Entering stage ``name`` of the call's work (``check`` first)."""


_watch: ContextVar[CallWatch | None] = ContextVar("compute_call_watch", default=None)
_executor: ThreadPoolExecutor | None = None
_thread_id: int | None = None
_start_lock = threading.Lock()


def _record_thread() -> None:
    global _thread_id
    _thread_id = threading.get_ident()


def enable() -> None:
    """Start the compute thread (idempotent; it lives as long as the process)."""
    global _executor
    with _start_lock:
        if _executor is None:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute", initializer=_record_thread)
            executor.submit(lambda: None).result()  # the thread exists and its id is known
            _executor = executor


def on_compute_thread() -> bool:
    return _thread_id is not None and threading.get_ident() == _thread_id


@contextlib.contextmanager
def watching(call: CallWatch) -> Iterator[None]:
    """Work done below this (in this thread, and what it hands to ``run``) belongs to ``call``."""
    token = _watch.set(call)
    try:
        yield
    finally:
        _watch.reset(token)


def stage(name: str) -> None:
    """The current call enters stage ``name`` (nothing when no call is watched)."""
    call = _watch.get()
    if call is not None:
        call.stage(name)


def run(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` on the compute thread once enabled, else inline; when a call is
    watched, not at all if its caller has gone by the time the job is reached."""
    call = _watch.get()
    if _executor is None or on_compute_thread():
        if call is not None:
            call.check()
        return fn(*args, **kwargs)

    def job() -> T:
        if call is not None:
            call.check()
        return fn(*args, **kwargs)
    return _executor.submit(job).result()
