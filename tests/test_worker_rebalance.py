"""Rebalance hygiene: cooperative revocations commit what they give up, a revocation never ends the
loop (issue 12's idle first worker), and a static member restarted within the session timeout gets
its partitions back with no group-wide stall (real broker, worker subprocesses, measured gap)."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from kafka import TopicPartition

from schemas.settings import Settings
from serve_app.scoring import ScoreCache
from tests.fixtures_worker import make_jobs
from tests.support.fake_kafka import FakeConsumer, FakeProducer
from tests.test_worker_loop import TOPIC, TP0, GatedClient, Harness, job, until
from tests.test_worker_pipeline import _owned
from workers.worker import Worker, instance_id_for


def test_cooperative_revocation_commits_the_partitions_it_gives_up():
    with Harness() as h:
        for i in range(3):
            h.consumer.add(TOPIC, job(f"j{i}"))
        until(lambda: len(h.results()) == 3)
        # kafka-python's cooperative protocol drops the partitions from the assignment *before* the
        # callback runs: their finished offsets must still be committed, or the next owner redoes them.
        h.consumer.revoke({TP0}, cooperative=True)
        assert h.consumer.committed(TP0) == 3


def test_static_instance_id_comes_only_from_a_stable_worker_id():
    s = Settings(worker={"worker_id": "pod-7:rerank"}, redis={"enabled": False})
    fakes = dict(consumer_factory=FakeConsumer, producer_factory=lambda _t: FakeProducer(), prepare_topics=lambda: None)
    assert Worker(s, GatedClient(), **fakes).instance_id == "pod-7_rerank"  # worker.worker_id: stable
    assert Worker(s, GatedClient(), worker_id="host:123#0", **fakes).instance_id is None  # host:pid: dynamic
    assert Worker(s, GatedClient(), instance_id="consumers-2", **fakes).instance_id == "consumers-2"
    off = Settings(kafka={"static_membership": False}, worker={"worker_id": "pod-7"}, redis={"enabled": False})
    assert Worker(off, GatedClient(), **fakes).instance_id is None
    assert instance_id_for("a b/c:..") == "a_b_c_" and len(instance_id_for("x" * 400)) == 249


class LongGatedClient(GatedClient):
    """Gated jobs stay in flight for the whole test (a slow join must not see them dead-lettered first)."""

    def score(self, request):
        gate = self.gates.get(request.query)
        if gate is not None:
            assert gate.wait(60), "test gate never opened"
        return [len(d) / 100 for d in request.documents]


class SlowAckProducer:
    """A real producer whose ``flush(timeout<=1)`` times out, as when the broker acks slowly."""

    def __init__(self, real):
        self.real = real
        self.timeouts = 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def flush(self, timeout=None):
        from kafka.errors import KafkaTimeoutError

        if timeout is not None and timeout <= 1:
            self.timeouts += 1
            raise KafkaTimeoutError("Timeout waiting for future")
        return self.real.flush(timeout=timeout)


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_a_revocation_whose_flush_times_out_keeps_the_first_worker_consuming(
    kafka_admin, kafka_bootstrap, unique_name, assignor
):
    """Issue 12's "first worker lost its partitions and stayed idle": the revocation callback's
    ``flush(timeout=1)`` raised KafkaTimeoutError, kafka-python re-raised it from ``poll()`` and the
    loop ended (in a ``--ray`` actor the thread died and the actor idled). Real broker, real group."""
    from kafka import KafkaConsumer
    from kafka.admin import NewTopic

    from workers.kafka_io import assignor as make_assignor
    from workers.kafka_io import make_producer

    topic = f"{unique_name}.jobs"
    kafka_admin.create_topics([NewTopic(t, 2, 1) for t in (topic, f"{unique_name}.res", f"{unique_name}.dlq")])
    settings = Settings(
        kafka={
            "bootstrap_servers": kafka_bootstrap,
            "group_id": f"{unique_name}.g",
            "feeds": {"recommendation": {"topic": topic, "instruction": "x"}},
            "results_topic": f"{unique_name}.res",
            "dlq_topic": f"{unique_name}.dlq",
            "assignor": assignor,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 500,
        },
        redis={"enabled": False},
        worker={"commit_interval_s": 0.1},
    )
    client = LongGatedClient()
    client.gates["slow"] = threading.Event()
    producers: list[SlowAckProducer] = []

    def producer_factory(_tid):
        producers.append(SlowAckProducer(make_producer(settings)))
        return producers[-1]

    worker = Worker(
        settings,
        client,
        cache=ScoreCache(settings.redis),
        worker_id="first",
        producer_factory=producer_factory,
        prepare_topics=lambda: None,  # created above; the worker waits for their metadata
    )
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", worker.run()), daemon=True)
    worker.open()
    thread.start()
    second = None
    try:
        until(lambda: len(worker.assignment) == 2, timeout=30)
        feed = make_producer(settings)
        for p in (0, 1):  # one gated (in-flight) job on each partition
            feed.send(topic, job(f"slow{p}", query="slow"), partition=p)
        feed.flush()
        feed.close()
        until(lambda: worker.in_flight == 2, timeout=15)
        second = KafkaConsumer(
            topic,
            **settings.kafka.client_options(),
            group_id=settings.kafka.group_id,
            partition_assignment_strategy=[make_assignor(assignor)],
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )
        deadline = time.monotonic() + 30
        while not second.assignment() and time.monotonic() < deadline:
            second.poll(timeout_ms=100)
        assert second.assignment(), "the second member never got a partition"
        assert producers[0].timeouts >= 1, "the revocation never waited on a flush (nothing tested)"
        until(lambda: len(worker.assignment) == 1 or not thread.is_alive(), timeout=40)  # it keeps its share
        assert thread.is_alive() and worker.fatal is None, f"the worker loop ended: {result}"
        client.gates["slow"].set()
        until(lambda: worker.counts["results"] == 2, timeout=15)
    finally:
        client.gates["slow"].set()
        if second is not None:
            second.close()
        worker.stop()
        thread.join(30)
    assert result.get("rc") == 0


# -- a static member restarted within the session timeout ------------------------------------------


class ArrivalLog:
    """Reads the results topic in a thread and keeps (arrival time, job_id) of each result."""

    def __init__(self, settings: Settings):
        from workers.kafka_io import make_consumer

        self.arrivals: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._consumer = make_consumer(settings, group_id=None)
        tps = [TopicPartition(settings.kafka.results_topic, p) for p in range(settings.kafka.topic_partitions)]
        self._consumer.assign(tps)
        self._consumer.seek_to_beginning(*tps)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for recs in self._consumer.poll(timeout_ms=50).values():
                now = time.monotonic()
                self.arrivals.extend((now, json.loads(r.value)["job_id"]) for r in recs)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def longest_gap(times: list[float], start: float, end: float) -> float:
    inside = sorted(t for t in times if start <= t <= end)
    points = [start, *inside, end]
    return max(b - a for a, b in zip(points, points[1:]))


@pytest.mark.slow
def test_static_member_restarted_within_the_session_timeout_causes_no_group_stall(make_pipeline):
    p = make_pipeline(RERANK_KAFKA_SESSION_TIMEOUT_MS="20000", RERANK_WORKER_MAX_IN_FLIGHT="4")
    a = p.start_worker(RERANK_WORKER_WORKER_ID="static-a")
    b = p.start_worker(RERANK_WORKER_WORKER_ID="static-b")
    a.wait_ready()
    b.wait_ready()
    until(  # settled: 2 of 4 each
        lambda: "(owns 2)" in a.output and "(owns 2)" in b.output, timeout=60, context=lambda: a.output + b.output
    )
    arrivals = ArrivalLog(p.settings)
    stop = threading.Event()
    placed: dict[str, tuple[str, int]] = {}

    def produce() -> None:
        i = 0
        while not stop.is_set():  # ~20 jobs/s spread over both feeds' partitions
            batch = make_jobs(f"r{i}", 1, docs=4) + make_jobs(f"m{i}", 1, docs=4, feed="moderation")
            placed.update({j: (t, part) for j, (t, part, _) in p.produce(batch).items()})
            i += 1
            time.sleep(0.1)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        time.sleep(4)
        b_lines = len(b.lines)
        killed_at = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        a.wait(10)
        a2 = p.start_worker(RERANK_WORKER_WORKER_ID="static-a")  # same id: the same static member
        a2.wait_ready(90)
        a2.wait_assigned(30)
        back_at = time.monotonic()
        time.sleep(4)
    finally:
        stop.set()
        producer.join(10)
    p.wait_for(list(placed), timeout=90)
    arrivals.close()
    a_parts = _owned(a.output)
    times_b = [t for t, j in arrivals.arrivals if placed.get(j, ("", -1)) not in a_parts]
    times_a = [t for t, j in arrivals.arrivals if placed.get(j, ("", -1)) in a_parts]
    gap_all = longest_gap([t for t, _ in arrivals.arrivals], killed_at, back_at + 3)
    gap_b = longest_gap(times_b, killed_at, back_at + 3)
    gap_a = longest_gap(times_a, killed_at, back_at + 3)
    print(
        f"\nstatic restart: restart took {back_at - killed_at:.1f} s; longest output gap {gap_all:.2f} s overall,"
        f" {gap_b:.2f} s on the surviving member's partitions, {gap_a:.2f} s on the restarted member's"
    )
    later_b = "".join(b.lines[b_lines:])
    assert " revoked " not in later_b and " assigned " not in later_b, f"the other member rebalanced:\n{later_b}"
    assert _owned(a2.output) == a_parts, "the restarted static member did not get its own partitions back"
    assert gap_b < 2.0, f"the surviving member stalled {gap_b:.1f} s"
