"""The worker's poll loop with in-memory fake clients: commit boundaries, revocation, back-pressure,
transactions and the per-record guard. The real broker is exercised in test_worker_pipeline.py."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kafka import TopicPartition

from schemas.messages import DeadLetter, RerankResult
from schemas.scoring import ModelInfo, ScoreRequest
from schemas.settings import Settings
from serve_app.scoring import ScoreCache
from tests.support.fake_kafka import FakeConsumer, FakeProducer
from workers import checkpoint
from workers.worker import Worker

TOPIC = "rerank.jobs.recommendation"
TP0 = TopicPartition(TOPIC, 0)
INFO = ModelInfo(
    id="fake", revision=None, kind="seq-cls", device="cpu", dtype="float32", max_length=512, fallback=False
)


class GatedClient:
    """Scores len(doc)/100; a query listed in ``gates`` blocks until its event is set."""

    def __init__(self) -> None:
        self.gates: dict[str, threading.Event] = {}
        self.calls = 0

    def info(self) -> ModelInfo:
        return INFO

    def score(self, request: ScoreRequest) -> list[float]:
        self.calls += 1
        gate = self.gates.get(request.query)
        if gate is not None:
            assert gate.wait(10), "test gate never opened"
        return [len(d) / 100 for d in request.documents]

    async def ascore(self, request: ScoreRequest) -> list[float]:
        return self.score(request)


def job(job_id: str, query: str = "q", **kw) -> bytes:
    body = {
        "job_id": job_id,
        "feed": "recommendation",
        "query": query,
        "candidates": [{"id": "a", "text": "short"}, {"id": "b", "text": "a longer text"}],
        **kw,
    }
    return json.dumps(body).encode()


class Harness:
    def __init__(self, *, exactly_once: bool = False, max_in_flight: int = 16, hold: bool = False):
        self.settings = Settings(
            kafka={"exactly_once": exactly_once},
            redis={"enabled": False},
            worker={"commit_interval_s": 0.05, "max_in_flight": max_in_flight, "retry_backoff_s": 0.01},
        )
        self.consumer, self.producer, self.client = FakeConsumer(), FakeProducer(hold=hold), GatedClient()
        self.worker = Worker(
            self.settings,
            self.client,
            cache=ScoreCache(self.settings.redis),
            worker_id="w1",
            consumer_factory=lambda: self.consumer,
            producer_factory=lambda _tid: self.producer,
            prepare_topics=lambda: None,
        )
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.rc: int | None = None

    def _run(self) -> None:
        self.rc = self.worker.run()

    def __enter__(self) -> Harness:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for gate in self.client.gates.values():
            gate.set()
        self.worker.stop()
        self.thread.join(15)
        assert not self.thread.is_alive()

    def results(self) -> list[RerankResult]:
        return [
            RerankResult.model_validate_json(v) for v in self.producer.topic_values(self.settings.kafka.results_topic)
        ]

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.model_validate_json(v) for v in self.producer.topic_values(self.settings.kafka.dlq_topic)]


def until(cond, timeout: float = 5.0, context=lambda: "") -> None:
    """Wait for ``cond``; on timeout the assertion shows ``context()`` (e.g. the workers' output)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not reached\n{context()}"
        time.sleep(0.01)


def test_only_the_contiguous_acknowledged_prefix_is_committed():
    with Harness() as h:
        h.client.gates["slow"] = threading.Event()
        h.consumer.add(TOPIC, job("j0"))
        h.consumer.add(TOPIC, job("j1", query="slow"))
        for i in range(2, 5):
            h.consumer.add(TOPIC, job(f"j{i}"))
        until(lambda: len(h.results()) == 4)  # everything but the slow job is published
        time.sleep(0.2)  # several commit intervals
        assert h.consumer.committed(TP0) == 1  # offset 1 unfinished: nothing past it
        h.client.gates["slow"].set()
        until(lambda: h.consumer.committed(TP0) == 5)
    assert sorted(r.job_id for r in h.results()) == [f"j{i}" for i in range(5)]


def test_unacknowledged_publishes_hold_the_commit_back():
    with Harness(hold=True) as h:
        for i in range(3):
            h.consumer.add(TOPIC, job(f"j{i}"))
        until(lambda: len(h.producer.sent) == 3)
        time.sleep(0.2)
        assert h.consumer.committed(TP0) in (None, 0)
        h.producer.ack_all()
        until(lambda: h.consumer.committed(TP0) == 3)


def test_revocation_mid_job_never_commits_past_unfinished_work(monkeypatch):
    monkeypatch.setattr(checkpoint, "REVOKE_GRACE_S", 0.3)
    with Harness() as h:
        h.client.gates["slow"] = threading.Event()
        h.consumer.add(TOPIC, job("j0"))
        h.consumer.add(TOPIC, job("j1", query="slow"))
        h.consumer.add(TOPIC, job("j2"))
        until(lambda: len(h.results()) == 2)
        until(lambda: h.consumer.committed(TP0) == 1)
        h.consumer.revoke({TP0})  # waits REVOKE_GRACE_S for the slow job, then commits what is done
        assert all(c[TP0] <= 1 for c in h.consumer.commits if TP0 in c)
        h.client.gates["slow"].set()  # finishes after the revocation: published, never committed
        until(lambda: len(h.results()) == 3)
        time.sleep(0.2)
        assert max(c[TP0] for c in h.consumer.commits if TP0 in c) == 1


def test_pause_at_the_in_flight_limit_and_resume_below_half():
    with Harness(max_in_flight=2) as h:
        gate = h.client.gates["slow"] = threading.Event()
        for i in range(6):
            h.consumer.add(TOPIC, job(f"j{i}", query="slow"))
        until(lambda: "pause" in h.consumer.pause_events)
        assert TP0 in h.consumer.paused()
        gate.set()
        until(lambda: "resume" in h.consumer.pause_events)
        until(lambda: len(h.results()) == 6)
        until(lambda: h.consumer.committed(TP0) == 6)


MOD_TP0 = TopicPartition("rerank.jobs.moderation", 0)


def test_a_feed_at_its_budget_pauses_its_own_partitions_only():
    """A recommendation burst at its budget leaves moderation fetching: its jobs are answered while
    recommendation is stuck. (Exactly-once pauses per feed too, but its commits wait for every job in
    flight, so there a slow feed still holds the other back at each commit interval.)"""
    with Harness(max_in_flight=2) as h:
        gate = h.client.gates["slow"] = threading.Event()
        for i in range(4):
            h.consumer.add(TOPIC, job(f"r{i}", query="slow"))
        until(lambda: TP0 in h.consumer.paused())
        h.consumer.add(MOD_TP0.topic, job("m0", feed="moderation", long_documents="truncate"))
        until(lambda: [r.job_id for r in h.results()] == ["m0"])
        assert MOD_TP0 not in h.consumer.paused()
        gate.set()
        until(lambda: len(h.results()) == 5)


def test_transactions_commit_exactly_the_offsets_of_their_results():
    with Harness(exactly_once=True) as h:
        for i in range(3):
            h.consumer.add(TOPIC, job(f"j{i}"))
        until(lambda: ("offsets", {(TOPIC, 0): 3}) in h.producer.events)
    ev = h.producer.events
    assert ev[:2] == ["init", "begin"]
    i_offsets = ev.index(("offsets", {(TOPIC, 0): 3}))
    assert ev[i_offsets + 1] == "commit"
    sends_before = [e for e in ev[:i_offsets] if isinstance(e, tuple) and e[0] == "send"]
    assert len(sends_before) == 3  # the three results are inside the transaction that commits offset 3
    assert ev[-1] == "commit" and "abort" not in ev  # clean stop: the last transaction commits, no reopen
    assert h.consumer.commits == []  # offsets go through the transaction, never a plain commit


def test_poison_records_become_dead_letters_and_the_loop_goes_on():
    with Harness() as h:
        h.consumer.add(TOPIC, b"\xff\xfe not json")
        h.consumer.add(TOPIC, None)
        h.consumer.add(TOPIC, b"[" * 10_000 + b"]" * 10_000)
        h.consumer.add(
            TOPIC,
            json.dumps(
                {"job_id": "s", "feed": "recommendation", "query": "\ud800", "candidates": [{"id": "a", "text": "x"}]}
            ).encode(),
        )
        h.consumer.add(TOPIC, job("good"))
        until(lambda: h.consumer.committed(TP0) == 5)
        assert [r.job_id for r in h.results()] == ["good"]
        assert len(h.dead_letters()) == 4
    assert h.rc == 0


def test_unexpected_processing_error_is_a_dead_letter_not_a_crash(monkeypatch):
    with Harness() as h:

        def boom(item, stopping=None):
            raise KeyError("surprise")

        monkeypatch.setattr(h.worker.processor, "finish", boom)
        h.consumer.add(TOPIC, job("j0"))
        until(lambda: len(h.dead_letters()) == 1)
        letter = h.dead_letters()[0]
        assert letter.error_kind.value == "internal_error" and "KeyError" in letter.reason
        until(lambda: h.consumer.committed(TP0) == 1)
    assert h.rc == 0


def test_publish_failure_stops_the_worker_without_committing():
    with Harness(hold=True) as h:
        h.consumer.add(TOPIC, job("j0"))
        until(lambda: h.producer.pending)
        h.producer.pending[0].fail(RuntimeError("broker gone"))
        h.thread.join(10)
    assert h.rc == 1
    assert h.consumer.committed(TP0) in (None, 0)


@pytest.mark.parametrize("exactly_once", [False, True])
def test_counts_are_exact_under_concurrency(exactly_once):
    with Harness(exactly_once=exactly_once, max_in_flight=8) as h:
        for i in range(200):
            h.consumer.add(TOPIC, job(f"j{i}", query=f"q{i}"))
        until(lambda: h.worker.counts["results"] == 200, timeout=20)
    assert len({r.job_id for r in h.results()}) == 200
