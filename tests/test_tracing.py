"""Traces across Kafka and HTTP: header rules, W3C trace context in and out, spans of the HTTP route,
OTLP export to a real receiver, and one trace followed from a job produced by confluent-kafka (with a
traceparent) through the worker and the Serve call to its published result."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from schemas.settings import TracingSettings
from serve_app import tracing
from tests.fixtures_worker import ROOT, make_jobs
from tests.support.net import free_port
from workers.headers import MAX_CARRIED_BYTES, MAX_CARRIED_HEADERS, carried_headers

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(scope="session")
def exporter_session() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    tracing.add_exporter(exporter, TracingSettings(), "test", batch=False)
    return exporter


@pytest.fixture
def spans(exporter_session: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter_session.clear()
    return exporter_session


def _trace_id(span) -> str:
    return f"{span.context.trace_id:032x}"


def test_carried_headers_drop_ours_and_the_trace_context_keep_the_rest():
    incoming = [
        ("traceparent", TRACEPARENT.encode()),
        ("tracestate", b"vendor=1"),
        ("baggage", b"tenant=a"),
        ("rerank-redrive-count", b"1"),
        ("x-tenant", b"acme"),
        ("empty", None),
    ]
    assert carried_headers(incoming) == [("baggage", b"tenant=a"), ("x-tenant", b"acme"), ("empty", None)]
    many = [(f"h{i}", b"v") for i in range(100)]
    assert len(carried_headers(many)) == MAX_CARRIED_HEADERS
    big = [("a", b"x" * 10_000), ("b", b"y" * 10_000), ("c", b"z")]
    assert [k for k, _ in carried_headers(big)] == ["a"]
    assert sum(len(k) + len(v or b"") for k, v in carried_headers(big)) <= MAX_CARRIED_BYTES


HEADERS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["traceparent", "tracestate", "baggage", "rerank-x"]), st.text(max_size=12)),
        st.one_of(st.none(), st.binary(max_size=80), st.just(TRACEPARENT.encode())),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(HEADERS)
def test_any_kafka_headers_give_a_context_or_none_and_carry_without_raising(headers):
    ctx = tracing.extract(headers)
    if ctx is not None:
        assert any(k == "traceparent" for k, _ in headers)
    for key, value in carried_headers(headers):
        key.encode("utf-8")
        assert not key.startswith("rerank-") and key.lower() not in tracing.TRACE_HEADERS
        assert value is None or isinstance(value, bytes)


def test_inject_continues_the_incoming_trace(spans):
    parent = tracing.extract([("traceparent", TRACEPARENT.encode())])
    s = tracing.start_span("child", parent)
    ((key, value),) = tracing.inject(s)
    s.end()
    assert key == "traceparent" and value.decode().split("-")[1] == TRACE_ID
    assert tracing.extract([("traceparent", b"00-garbage")]) is None
    assert tracing.extract([("traceparent", b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01")]) is None  # invalid id


def test_otlp_export_only_with_an_endpoint():
    assert tracing.otlp_endpoint(TracingSettings(), {}) is None
    assert tracing.otlp_endpoint(TracingSettings(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == (
        "http://c:4318/v1/traces"
    )
    assert tracing.otlp_endpoint(TracingSettings(otlp_endpoint="http://x:1"), {}) == "http://x:1/v1/traces"
    with pytest.raises(ValueError, match="http"):
        TracingSettings(otlp_endpoint="collector:4318")


class _Collector(BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP receiver: keeps the names and trace ids of the spans posted to /v1/traces."""

    got: list[tuple[str, str]] = []

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                self.got.extend((s.name, s.trace_id.hex()) for s in ss.spans)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


EXPORT_ONE_SPAN = f"""
from schemas.settings import load_settings
from serve_app import tracing
assert tracing.configure(load_settings().tracing, "test")
parent = tracing.extract([("traceparent", b"{TRACEPARENT}")])
tracing.start_span("exported", parent).end()
tracing.flush()
"""


def test_spans_reach_a_real_otlp_receiver_only_when_an_endpoint_is_configured():
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    try:  # in a subprocess: an exporter stays installed for the life of its process
        run = [sys.executable, "-c", EXPORT_ONE_SPAN]
        off = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert off.returncode == 1 and "AssertionError" in off.stderr  # no endpoint: configure says no
        env["RERANK_TRACING_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
        on = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert on.returncode == 0, on.stderr
        assert ("exported", TRACE_ID) in _Collector.got
    finally:
        server.shutdown()


def test_http_route_is_one_server_span_with_the_score_call_inside(spans):
    """The ingress's route span comes from FastAPI's own OpenTelemetry support (it reads traceparent);
    the scoring core's model call (TracedScoreClient) nests inside it."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    class Client:
        async def ascore(self, request):
            return [0.5] * len(request.documents)

    client = tracing.TracedScoreClient(Client())
    app = FastAPI()

    @app.post("/v1/rerank/{name}")
    async def rerank(name: str) -> dict:
        from schemas.scoring import ScoreRequest

        return {"scores": await client.ascore(ScoreRequest("q", ["a", "b"]))}

    resp = TestClient(app).post("/v1/rerank/x", headers={"traceparent": TRACEPARENT})
    assert resp.status_code == 200 and resp.json() == {"scores": [0.5, 0.5]}
    finished = spans.get_finished_spans()
    by_id = {sp.context.span_id: sp for sp in finished}
    (server,) = [sp for sp in finished if sp.kind == SpanKind.SERVER]
    (score,) = [sp for sp in finished if sp.name == "rerank.score"]
    assert server.name == "POST /v1/rerank/{name}" and _trace_id(server) == TRACE_ID
    assert f"{server.parent.span_id:016x}" == PARENT_ID
    assert _trace_id(score) == TRACE_ID and score.attributes["rerank.documents"] == 2
    node = score
    while node is not server:  # the score span sits inside the server span
        node = by_id[node.parent.span_id]


# -- Kafka in to Kafka out, on the real broker and Serve ---------------------------------------------


@pytest.mark.slow
def test_one_trace_from_a_produced_job_to_its_published_result(make_pipeline, kafka_bootstrap, spans):
    from confluent_kafka import Consumer, Producer

    from serve_app.runtime import get_score_handle
    from serve_app.scoring.client import ServeScoreClient
    from workers.worker import Worker

    p = make_pipeline()
    s = p.settings
    worker = Worker(s, ServeScoreClient(get_score_handle(s), 30), worker_id="traced")
    thread = threading.Thread(target=worker.run, daemon=True)
    worker.open()
    thread.start()
    try:
        (job,) = make_jobs("traced", 1, docs=6)
        bad_parent = f"00-{'a' * 32}-{'b' * 16}-01"
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        topic = s.kafka.feeds["recommendation"].topic
        headers = [("traceparent", TRACEPARENT.encode()), ("x-tenant", b"acme"), ("rerank-internal", b"no")]
        producer.produce(topic, job.model_dump_json().encode(), key=job.job_id, headers=headers)
        producer.produce(topic, b"not json", headers=[("traceparent", bad_parent.encode())])
        assert producer.flush(30) == 0

        consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{s.kafka.group_id}.reader",
                             "auto.offset.reset": "earliest"})  # fmt: skip
        consumer.subscribe([s.kafka.results_topic, s.kafka.dlq_topic])
        out: dict[str, dict[str, bytes]] = {}
        deadline = time.monotonic() + 60
        while len(out) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out[msg.topic()] = dict(msg.headers() or [])
        consumer.close()
        assert set(out) == {s.kafka.results_topic, s.kafka.dlq_topic}, out
    finally:
        worker.stop()
        thread.join(30)

    result_headers, dlq_headers = out[s.kafka.results_topic], out[s.kafka.dlq_topic]
    assert result_headers["x-tenant"] == b"acme" and "rerank-internal" not in result_headers
    version, trace_id, span_id, flags = result_headers["traceparent"].decode().split("-")
    assert trace_id == TRACE_ID and span_id != PARENT_ID
    assert dlq_headers["traceparent"].decode().split("-")[1] == "a" * 32  # the dead letter stays in its trace

    in_trace = [sp for sp in spans.get_finished_spans() if _trace_id(sp) == TRACE_ID]
    by_id = {sp.context.span_id: sp for sp in in_trace}
    names = {sp.name for sp in in_trace}
    assert {"rerank.job", "rerank.decode", "rerank.cache_lookup", "rerank.score", "rerank.publish"} <= names
    (root,) = [sp for sp in in_trace if sp.name == "rerank.job"]
    assert f"{root.parent.span_id:016x}" == PARENT_ID and root.kind == SpanKind.CONSUMER
    for sp in in_trace:  # one tree: every span leads up to the job span, the job span to the producer's
        node = sp
        while node is not root:
            node = by_id[node.parent.span_id]
    (publish,) = [sp for sp in in_trace if sp.name == "rerank.publish"]
    assert f"{publish.context.span_id:016x}" == span_id  # the result's traceparent names the publish span


def test_the_real_loop_carries_headers_and_the_redrive_mark_with_fake_clients(spans):
    from tests.test_worker_loop import TOPIC, Harness, job, until

    with Harness() as h:
        user = [("traceparent", TRACEPARENT.encode()), ("x-tenant", b"acme"), ("baggage", b"k=v")]
        h.consumer.add(TOPIC, job("ok"), headers=user)
        h.consumer.add(TOPIC, b"{", headers=[*user, ("rerank-redrive-count", b"2"), ("rerank-redrive-from", b"d/0/9")])
        until(lambda: len(h.producer.sent) == 2)
    by_topic = {topic: dict(hdrs or []) for (topic, _, _), hdrs in zip(h.producer.sent, h.producer.headers)}
    for hdrs in by_topic.values():
        assert hdrs["x-tenant"] == b"acme" and hdrs["baggage"] == b"k=v"
        assert hdrs["traceparent"].decode().split("-")[1] == TRACE_ID
        assert not any(k.startswith("rerank-") for k in hdrs)
    (letter,) = h.dead_letters()
    assert letter.redrive_count == 2 and letter.redrive_from == "d/0/9"
    assert {sp.name for sp in spans.get_finished_spans() if _trace_id(sp) == TRACE_ID} >= {
        "rerank.job",
        "rerank.decode",
        "rerank.publish",
    }
