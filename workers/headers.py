"""Kafka headers of a consumed job: what is carried to its result or dead letter, its trace, and the
redrive mark a DLQ replay put there.

Carried: every header except our own (``rerank-*``: the redrive mark is re-read, not echoed) and the
W3C trace context (``traceparent``/``tracestate``), which is written anew from the worker's publish
span, in the same trace; ``baggage`` and user headers pass unchanged. At most ``MAX_CARRIED_HEADERS``
headers and ``MAX_CARRIED_BYTES`` bytes (the first ones win), so a result or dead letter stays small.

Headers are input like the value: any bytes, any number, repeated keys. Reading them never raises;
an unreadable mark still counts as a replay (a record that says it was replayed is not replayed
again in a loop, whatever else its header holds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span, SpanKind

from schemas.messages import REDRIVE_COUNT_HEADER, REDRIVE_FROM_HEADER
from serve_app import tracing

Headers = Iterable[tuple[str, bytes | None]]
MAX_REDRIVE_COUNT = 1_000_000
INTERNAL_PREFIX = "rerank-"
MAX_CARRIED_HEADERS = 32
MAX_CARRIED_BYTES = 16 * 1024


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


def carried_headers(headers: Headers) -> list[tuple[str, bytes | None]]:
    """The headers a job's result and dead letter carry (see the module doc); never raises."""
    out: list[tuple[str, bytes | None]] = []
    size = 0
    for key, value in headers:
        if not isinstance(key, str) or key.startswith(INTERNAL_PREFIX) or key.lower() in tracing.TRACE_HEADERS:
            continue
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: not sendable as a Kafka header key
            continue
        data = None if value is None else bytes(value)
        size += len(key) + len(data or b"")
        if len(out) == MAX_CARRIED_HEADERS or size > MAX_CARRIED_BYTES:
            break
        out.append((key, data))
    return out


@dataclass
class JobTrace:
    """The spans of one consumed record: ``rerank.job`` (child of the producer's traceparent, if any) and
    its steps (decode, cache lookup, score, publish); the output headers carry the publish span."""

    topic: str
    partition: int
    offset: int
    headers: tuple[tuple[str, bytes | None], ...] = ()
    job: Span = field(init=False)

    def __post_init__(self) -> None:
        attrs = {
            "messaging.system": "kafka",
            "messaging.destination.name": self.topic,
            "messaging.kafka.partition": self.partition,
            "messaging.kafka.offset": self.offset,
        }
        self.job = tracing.start_span("rerank.job", tracing.extract(self.headers), SpanKind.CONSUMER, **attrs)

    def step(self, name: str, **attrs: Any):
        """A child span made current for a block (decode; scoring on a pool thread)."""
        return tracing.span(name, self.job, **attrs)

    def activated(self):
        """The job span made current in this thread for a block (a pool thread scoring the job)."""
        return tracing.activated(self.job)

    def record(self, name: str, start_ns: int, end_ns: int, **attrs: Any) -> None:
        """A child span of a step done for many jobs at once (one cache MGET per poll), with its times."""
        tracing.record(name, self.job, start_ns, end_ns, **attrs)

    def publish(self, topic: str) -> tuple[Span, list[tuple[str, bytes | None]]]:
        """The publish span (end it on the broker's ack) and the headers of the outgoing record."""
        s = tracing.start_span("rerank.publish", self.job, SpanKind.PRODUCER, **{"messaging.destination.name": topic})
        return s, [*carried_headers(self.headers), *tracing.inject(s)]

    def end(self) -> None:
        self.job.end()
