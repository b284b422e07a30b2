"""Serialize a dead letter that always fits the producer's and the broker's size limits.

A dead letter carries the rejected payload base64 (+33 %), so any rejected message over ~786 KB used to
make a dead letter over the producer's 1 MiB ``max_request_size`` (MessageSizeTooLargeError): the bad
message was then neither processed nor reported. Here the payload is cut to a base64 prefix when needed,
with the original's size and SHA-256 kept, so the record is always sendable and still identifies the input.
"""

from __future__ import annotations

import base64
import hashlib

from schemas.messages import DeadLetter, now_ms
from workers.decode import Rejection

DEFAULT_MAX_DEAD_LETTER_BYTES = 900_000
"""Below the producer's default 1 MiB max_request_size and the broker's ~1 MiB max.message.bytes,
leaving room for the key, headers and record overhead."""
MIN_DEAD_LETTER_BYTES = 1024
"""Smallest ``max_bytes`` accepted: room for the fixed fields, however long the strings given."""
MAX_REASON_CHARS = 4000
"""A reason longer than this is cut even when the letter would fit: it is for humans and logs."""
MAX_NAME_CHARS = 256
"""job_id, source_topic and worker_id are cut here (Kafka topic names have at most 249 characters)."""
_CUT = " [...]"


def _utf8_safe(text: str) -> str:
    """Lone surrogates as ``\\udXXX`` escapes: these fields are diagnostics and must serialize as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _cut(text: str, chars: int) -> str:
    """``text`` at most ``chars`` characters long, marked when cut."""
    if len(text) <= chars:
        return text
    if chars < len(_CUT):
        return text[:chars]
    return text[: chars - len(_CUT)] + _CUT


def build_dead_letter(
    raw: bytes | None,
    rejection: Rejection,
    *,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    worker_id: str,
    max_bytes: int = DEFAULT_MAX_DEAD_LETTER_BYTES,
    produced_at: int | None = None,
    redrive_count: int = 0,
    redrive_from: str | None = None,
) -> bytes:
    """The dead letter's JSON bytes, guaranteed ``len(...) <= max_bytes``.

    The whole payload is kept when it fits; otherwise ``payload_b64`` is the longest base64 prefix that
    fits and ``payload_truncated`` is true. ``payload_size`` and ``payload_sha256`` always describe the
    whole original. Text fields are made UTF-8 safe and cut when needed (reason first).
    ``redrive_count`` / ``redrive_from`` mark a record that was replayed from the DLQ (workers/redrive.py).
    Raises ValueError only for ``max_bytes < MIN_DEAD_LETTER_BYTES`` (a configuration error).
    """
    if max_bytes < MIN_DEAD_LETTER_BYTES:
        raise ValueError(f"max_bytes must be >= {MIN_DEAD_LETTER_BYTES}, got {max_bytes}")
    payload = bytes(raw or b"")
    texts = {
        "reason": _cut(_utf8_safe(rejection.reason), MAX_REASON_CHARS),
        "job_id": None if rejection.job_id is None else _cut(_utf8_safe(rejection.job_id), MAX_NAME_CHARS),
        "source_topic": _cut(_utf8_safe(source_topic), MAX_NAME_CHARS),
        "worker_id": _cut(_utf8_safe(worker_id), MAX_NAME_CHARS),
        "redrive_from": None if redrive_from is None else _cut(_utf8_safe(redrive_from), MAX_NAME_CHARS),
    }
    fixed = {
        "source_partition": source_partition,
        "source_offset": source_offset,
        "error_kind": rejection.kind,
        "produced_at": now_ms() if produced_at is None else produced_at,
        "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "redrive_count": max(0, redrive_count),
    }

    def render(payload_b64: str, truncated: bool) -> bytes:
        letter = DeadLetter(payload_b64=payload_b64, payload_truncated=truncated, **texts, **fixed)
        return letter.model_dump_json().encode("utf-8")

    whole = render(base64.b64encode(payload).decode("ascii"), False)
    if len(whole) <= max_bytes:
        return whole

    # Too big: first make the letter without payload fit (cutting the longest text each round; every
    # cut character saves at least one byte), then fill the room left with a base64 prefix. Measured
    # with "false", which is one byte longer than the "true" a cut payload gets, so the result fits.
    empty = render("", False)
    while len(empty) > max_bytes:
        over = len(empty) - max_bytes
        name = max((k for k, v in texts.items() if v), key=lambda k: len(texts[k] or ""))
        value = texts[name] or ""
        texts[name] = _cut(value, max(0, len(value) - over - len(_CUT)))
        empty = render("", False)
    room = max_bytes - len(empty)  # base64 is JSON-safe: one character, one byte
    keep = min(len(payload), room // 4 * 3)
    return render(base64.b64encode(payload[:keep]).decode("ascii"), keep < len(payload))
