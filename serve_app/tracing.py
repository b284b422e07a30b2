"""OpenTelemetry for both doors: W3C trace context in and out, spans, and OTLP export when configured.

The Kafka worker and the HTTP ingress import this (``serve_app`` never imports ``workers``, so the
shared helpers live here). Without an endpoint (``tracing.otlp_endpoint`` or the standard
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``) nothing is installed: the API's no-op tracer costs about
a microsecond per span and still passes an incoming ``traceparent`` on unchanged, so a result
stays in its producer's trace even when this service records nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from schemas.settings import TracingSettings

log = logging.getLogger(__name__)

TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
"""The W3C trace-context headers: read on the way in, written anew (our span) on the way out."""
_PROPAGATOR = TraceContextTextMapPropagator()
_lock = threading.Lock()
_provider: Any = None  # the SDK TracerProvider once installed (one per process)
_endpoints: set[str] = set()

tracer = trace.get_tracer("rerank-stream")
"""A proxy: spans go to the provider installed by ``configure`` / ``add_exporter``, or nowhere."""


def otlp_endpoint(settings: TracingSettings, environ: Mapping[str, str] | None = None) -> str | None:
    """The OTLP/HTTP traces URL in force: the setting, else the standard OTEL variables; None = off."""
    env = os.environ if environ is None else environ
    if settings.otlp_endpoint:
        return settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"].strip()
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return env["OTEL_EXPORTER_OTLP_ENDPOINT"].strip().rstrip("/") + "/v1/traces"
    return None


def configure(settings: TracingSettings, role: str) -> bool:
    """Export this process's spans to OTLP when an endpoint is configured (idempotent). True = exporting."""
    endpoint = otlp_endpoint(settings)
    if endpoint is None:
        return False
    with _lock:
        if endpoint in _endpoints:
            return True
        _endpoints.add(endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    add_exporter(OTLPSpanExporter(endpoint=endpoint), settings, role)
    log.info("tracing: %s spans exported to %s", role, endpoint)
    return True


def add_exporter(exporter: Any, settings: TracingSettings, role: str, *, batch: bool = True) -> None:
    """Install the SDK provider once (service name, sampler) and send spans to ``exporter`` too.

    ``batch=False`` exports each span when it ends (tests with the SDK's in-memory exporter).
    """
    global _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    with _lock:
        if _provider is None:
            resource = Resource.create({"service.name": settings.service_name, "rerank.role": role})
            _provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
            trace.set_tracer_provider(_provider)
        _provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))


def flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered (before a process exits)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


# -- trace context in and out ------------------------------------------------------------------------


def extract(headers: Iterable[tuple[str, bytes | str | None]]) -> Context | None:
    """The remote parent of W3C trace-context headers (Kafka: bytes values; HTTP: str); None when absent
    or invalid. Never raises: headers are input."""
    carrier: dict[str, str] = {}
    for key, value in headers:
        name = key.lower() if isinstance(key, str) else ""
        if name in TRACE_HEADERS and value is not None:
            text = value if isinstance(value, str) else bytes(value[:1024]).decode("latin-1")
            carrier[name] = text
    if "traceparent" not in carrier:
        return None
    try:
        ctx = _PROPAGATOR.extract(carrier)
    except Exception:  # noqa: BLE001 - a malformed header means "no parent", never an error
        return None
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def inject(span: Span | None = None) -> list[tuple[str, bytes]]:
    """traceparent (+ tracestate) of ``span`` (default: the current one) as Kafka headers; [] when invalid."""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(span) if span is not None else None
    _PROPAGATOR.inject(carrier, context=ctx)
    return [(k, v.encode("ascii", "replace")) for k, v in carrier.items()]


def start_span(
    name: str, parent: Context | Span | None = None, kind: SpanKind = SpanKind.INTERNAL, **attrs: Any
) -> Span:
    """A span under ``parent`` (a context or a span; None = the current context), not made current."""
    ctx = trace.set_span_in_context(parent) if isinstance(parent, Span) else parent
    return tracer.start_span(name, context=ctx, kind=kind, attributes=_attributes(attrs))


def record(name: str, parent: Span, start_ns: int, end_ns: int, **attrs: Any) -> None:
    """A finished span with given times (a step done for many jobs at once, recorded in each job's trace)."""
    s = tracer.start_span(
        name, context=trace.set_span_in_context(parent), start_time=start_ns, attributes=_attributes(attrs)
    )
    s.end(end_time=end_ns)


@contextlib.contextmanager
def span(
    name: str, parent: Context | Span | None = None, kind: SpanKind = SpanKind.INTERNAL, **attrs: Any
) -> Iterator[Span]:
    """A span made current for the block (exceptions recorded, then re-raised)."""
    ctx = trace.set_span_in_context(parent) if isinstance(parent, Span) else parent
    with tracer.start_as_current_span(name, context=ctx, kind=kind, attributes=_attributes(attrs)) as s:
        yield s


@contextlib.contextmanager
def activated(parent: Span) -> Iterator[None]:
    """Make ``parent`` the current span in this thread for the block (a pool thread working for a job)."""
    token = otel_context.attach(trace.set_span_in_context(parent))
    try:
        yield
    finally:
        otel_context.detach(token)


def _attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``rerank.*`` attribute names for keyword arguments; None values dropped."""
    return {k if "." in k else f"rerank.{k}": v for k, v in attrs.items() if v is not None}


class TracedScoreClient:
    """A ``ScoreClient`` whose model calls are ``rerank.score`` spans (the Serve call, one per job or part),
    children of the current span: the worker's job, the ingress's request. Everything else is delegated."""

    def __init__(self, client: Any):
        self._client = client

    def score(self, request: Any) -> Any:
        with span("rerank.score", documents=len(request.documents)):
            return self._client.score(request)

    async def ascore(self, request: Any) -> Any:
        with span("rerank.score", documents=len(request.documents)):
            return await self._client.ascore(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
