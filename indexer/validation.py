"""What a request's text fields may hold, checked before anything else reads them.

Every string a client sends (collection names, external ids, source URIs, label keys and
values) is bounded and may hold no control characters (NUL included): PostgreSQL refuses
NUL in text, terminals and logs misread the rest, and an unbounded field would be stored,
echoed in errors and sent back in every answer that names its reference. A field that
breaks a rule is an ``InvalidRequest`` that does not repeat the field.
"""

from __future__ import annotations

import unicodedata

from origin_id.indexer.errors import InvalidRequest

MAX_COLLECTION = 128
MAX_EXTERNAL_ID = 512
MAX_SOURCE_URI = 2048
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024
#: How much of a client's text an error message may quote.
QUOTE = 64


def check_text(field: str, value: str, max_length: int, *, required: bool = False) -> str:
    if required and not value:
        raise InvalidRequest(f"{field} is empty")
    if len(value) > max_length:
        raise InvalidRequest(f"{field} is {len(value)} characters long; at most {max_length} are allowed")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise InvalidRequest(f"{field} holds a control character (NUL, newline, escape ...); none are allowed")
    return value


def check_collection(name: str, *, required: bool = False) -> str:
    return check_text("collection", name, MAX_COLLECTION, required=required)


def check_labels(labels: dict[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        raise InvalidRequest(f"{len(labels)} labels; at most {MAX_LABELS} are allowed")
    for key, value in labels.items():
        check_text("a label key", key, MAX_LABEL_KEY, required=True)
        check_text(f"label {quote(key)}", value, MAX_LABEL_VALUE)


def quote(value: str) -> str:
    """``value`` as an error message may show it: repr'd, at most ``QUOTE`` characters."""
    return repr(value[:QUOTE]) + ("..." if len(value) > QUOTE else "")
