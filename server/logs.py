"""Logs: plain text for a terminal, or one JSON object per line (``--log-format json``).

Every record made while a call is being served carries that call's ``request_id`` (the
client's ``x-request-id`` metadata, or one made up), which the server also sends back in
the call's trailing metadata, so a client's report can be matched to the server's log.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import datetime, timezone

request_id: ContextVar[str] = ContextVar("request_id", default="")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    #: Attributes a caller may add with ``extra=`` that are written as fields of their own.
    FIELDS = ("request_id", "method", "code", "ms", "key")

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for name in self.FIELDS:
            value = getattr(record, name, None)
            if value not in (None, ""):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(level: str, fmt: str) -> None:
    """Root logging for a command: ``fmt`` "json" or "text"."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("alembic", "faiss.loader", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
