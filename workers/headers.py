"""Kafka headers of a consumed job: the redrive mark a DLQ replay put there.

Headers are input like the value: any bytes, any number, repeated keys. Reading them never raises;
an unreadable mark still counts as a replay (a record that says it was replayed is not replayed
again in a loop, whatever else its header holds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas.messages import REDRIVE_COUNT_HEADER, REDRIVE_FROM_HEADER

Headers = Iterable[tuple[str, bytes | None]]
MAX_REDRIVE_COUNT = 1_000_000


@dataclass(frozen=True)
class RedriveMark:
    """How often a record was replayed from the DLQ (0 = never) and from which dead letter."""

    count: int = 0
    source: str | None = None


def header_text(value: bytes | None, limit: int = 256) -> str:
    """A header value as text for diagnostics: UTF-8 with replacements, at most ``limit`` characters."""
    return bytes(value or b"")[: limit * 4].decode("utf-8", "replace")[:limit]


def redrive_mark(headers: Headers) -> RedriveMark:
    """The redrive mark of a record's headers (the last one wins, as in most Kafka clients)."""
    count, source = 0, None
    for key, value in headers:
        if key == REDRIVE_COUNT_HEADER:
            text = header_text(value, 16).strip()
            count = min(int(text), MAX_REDRIVE_COUNT) if text.isascii() and text.isdigit() else 1
            count = max(count, 1)
        elif key == REDRIVE_FROM_HEADER:
            source = header_text(value)
            count = max(count, 1)
    return RedriveMark(count, source)
