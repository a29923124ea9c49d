"""What the server takes on: a bound on compute-bound calls, and per-key rates.

Every model call runs on one compute thread (``origin_id.models.compute``), so a call
admitted beyond what it can serve only waits, holding its memory, while its caller's
deadline runs out. ``Admission`` admits at most ``limit`` compute-bound calls (identify,
add, a bulk stream) at a time and refuses the next at once with RESOURCE_EXHAUSTED, which
a client can retry with backoff or send elsewhere. ``RateLimiter`` holds each API key to a
rate of calls per second (a token bucket, bursts of twice the rate).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator


class Overloaded(Exception):
    """Refused at once: the server is at capacity, or the key over its rate (RESOURCE_EXHAUSTED)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class Admission:
    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self.in_flight >= self.limit:
                raise Overloaded(f"server busy: {self.in_flight} calls in progress; retry with backoff", "overloaded")
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1


class RateLimiter:
    def __init__(self, default_rate: float):
        """``default_rate``: calls per second per key when the key sets none (0 = no limit)."""
        self.default_rate = default_rate
        self._buckets: dict[object, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: object, rate: float | None) -> None:
        rate = rate or self.default_rate
        if not rate:
            return
        burst = max(1.0, 2 * rate)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens < 1:
                self._buckets[who] = (tokens, now)
                raise Overloaded(f"rate limit of {rate:g} calls/s for this key reached; retry shortly", "rate_limited")
            self._buckets[who] = (tokens - 1, now)
