"""Autoscaling: the policy's decision rule (pure), the lag source against a real topic, and real
Serve deployments scaling 1 -> 2 -> 1 on queue depth and on a Kafka backlog."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from ray.serve.config import AutoscalingConfig

from schemas.scoring import ScoreRequest
from serve_app import runtime
from serve_app.autoscaling import QueueDepthLagPolicy, decide
from serve_app.lag import KafkaLagSource, LagReading


def test_decide_takes_the_larger_signal_within_bounds():
    assert decide(1.0, None, 100, 1, 4) == (1, "queue")
    assert decide(1.0, 250, 100, 1, 4) == (3, "lag")
    assert decide(3.2, 50, 100, 1, 4) == (4, "queue")
    assert decide(0.0, 0, 100, 1, 4) == (1, "queue")
    assert decide(0.0, 10_000, 100, 1, 4) == (4, "lag")


class FakeLag:
    def __init__(self, total: int):
        self.total = total

    def read(self) -> LagReading:
        return LagReading(self.total)

    def close(self) -> None:
        pass


def _ctx(current: int, requests: float) -> SimpleNamespace:
    config = AutoscalingConfig(min_replicas=1, max_replicas=5, target_ongoing_requests=2)
    return SimpleNamespace(
        current_num_replicas=current,
        target_num_replicas=current,
        total_num_requests=requests,
        config=config,
        policy_state={},
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=5,
        deployment_name="Reranker",
    )


def _wait_reading(policy: QueueDepthLagPolicy, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while policy.current_lag() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def test_policy_scales_on_fake_backlog_and_falls_back_to_queue_depth():
    lag = FakeLag(0)
    policy = QueueDepthLagPolicy(source=lag, lag_per_replica=100, poll_interval_s=0.05)
    _wait_reading(policy)
    assert policy(_ctx(1, 0))[0] == 1  # idle: min
    assert policy(_ctx(1, 6))[0] == 3  # 6 ongoing / target 2 -> 3 (queue)
    lag.total = 420
    time.sleep(0.2)
    assert policy(_ctx(1, 0))[0] == 5  # ceil(420 / 100) = 5 (lag)
    assert policy.decisions[-1]["reason"] == "lag" and policy.decisions[-1]["lag"] == 420
    no_kafka = QueueDepthLagPolicy(kafka=None)
    assert no_kafka.current_lag() is None and no_kafka(_ctx(2, 8))[0] == 4


def test_policy_holds_the_recent_request_peak_through_stale_zero_ticks():
    policy = QueueDepthLagPolicy(kafka=None)
    assert policy(_ctx(1, 6))[0] == 3  # 6 ongoing / target 2
    assert policy(_ctx(1, 0))[0] == 3  # a stale 0 within 3 look-back periods does not cancel the upscale
    policy._totals = [(t - 1000, n) for t, n in policy._totals]  # the peak ages out of the hold
    assert policy(_ctx(1, 0))[0] == 1


def test_policy_ignores_a_broken_lag_source():
    class Broken(FakeLag):
        reads = 0

        def read(self):
            Broken.reads += 1
            raise ConnectionError("broker down")

    policy = QueueDepthLagPolicy(source=Broken(0), poll_interval_s=0.05)
    assert policy.current_lag() is None  # starts the reader thread
    deadline = time.monotonic() + 5
    while Broken.reads < 3 and time.monotonic() < deadline:  # the thread survives failed readings
        time.sleep(0.02)
    assert Broken.reads >= 3, "the lag reader thread stopped after a failed reading"
    assert policy.current_lag() is None
    assert policy(_ctx(1, 2))[0] == 1  # queue depth alone decides


def _produce(bootstrap: str, topic: str, n: int) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(n):
        producer.send(topic, value=b"{}", key=str(i).encode())
    producer.flush()
    producer.close()


def _commit_to_end(bootstrap: str, group: str, topic: str) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    ends = consumer.end_offsets(tps)
    consumer.commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in tps})
    consumer.close()


def test_lag_source_reads_a_real_backlog(kafka_admin, kafka_bootstrap, unique_name):
    from kafka.admin import NewTopic

    from schemas.settings import KafkaSettings

    topic = f"{unique_name}.jobs"
    kafka_admin.create_topics([NewTopic(topic, 2, 1)])
    _produce(kafka_bootstrap, topic, 30)
    source = KafkaLagSource(KafkaSettings(bootstrap_servers=kafka_bootstrap), f"{unique_name}.g", [topic])
    try:
        reading = source.read()
        assert reading.total == 30 and sum(reading.partitions.values()) == 30  # never committed: from the start
        _commit_to_end(kafka_bootstrap, f"{unique_name}.g", topic)
        _produce(kafka_bootstrap, topic, 5)
        assert source.read().total == 5
    finally:
        source.close()


def _wait_replicas(settings, want: int, timeout: float) -> float:
    from serve_app import runtime

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if runtime.replica_count(settings) == want:
            return time.monotonic() - t0
        time.sleep(0.25)
    raise AssertionError(
        f"{settings.serve.app_name}: {runtime.replica_count(settings)} running replicas, wanted {want} within"
        f" {timeout}s; replica states now: {_replica_states(settings)}"
    )


def _replica_states(settings) -> dict[str, int]:
    """Every replica state (STARTING, RUNNING, ...) of the deployment, for a failure message."""
    from ray import serve

    app = serve.status().applications.get(settings.serve.app_name)
    if app is None or settings.serve.deployment_name not in app.deployments:
        return {}
    return {str(k): v for k, v in app.deployments[settings.serve.deployment_name].replica_states.items()}


FAST = dict(
    min_replicas=1,
    max_replicas=2,
    upscale_delay_s=1,
    downscale_delay_s=3,
    metrics_interval_s=0.5,
    look_back_period_s=1.5,
)


def test_serve_scales_up_under_load_and_back_down(extra_app):
    # Upscale on the first decision: on a loaded 2-core box Serve's request total flickers between
    # the real queue and 0 from tick to tick (stale handle reports), which resets any upscale delay.
    app = extra_app(
        "scale", target_ongoing_requests=1, max_batch_size=1, **{**FAST, "upscale_delay_s": 0, "look_back_period_s": 5}
    )
    handle = app.handle()
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        while not stop.is_set():
            try:
                handle.score.remote(ScoreRequest("load", ["some document text " * 30] * 8)).result(timeout_s=60)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=load, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        # the new replica is a fresh process (torch import, model load) on 2 cores the load keeps busy
        _wait_replicas(app.settings, 2, timeout=150)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:1]
    _wait_replicas(app.settings, 1, timeout=60)


def test_serve_scales_on_a_real_kafka_backlog_without_requests(extra_app, kafka_admin, kafka_bootstrap, unique_name):
    from kafka.admin import NewTopic

    topic, group = f"{unique_name}.jobs", f"{unique_name}.g"
    kafka_admin.create_topics([NewTopic(topic, 2, 1)])
    feeds = {"recommendation": {"topic": topic, "instruction": "x"}}
    app = extra_app(
        "lag",
        scale_on_kafka_lag=True,
        lag_per_replica=50,
        lag_poll_interval_s=0.5,
        kafka={"bootstrap_servers": kafka_bootstrap, "group_id": group, "feeds": feeds},
        **FAST,
    )
    _wait_replicas(app.settings, 1, timeout=30)
    time.sleep(3)  # several lag readings (every 0.5 s) of an empty backlog: no reason to scale
    assert runtime.replica_count(app.settings) == 1
    _produce(kafka_bootstrap, topic, 200)  # backlog 200 / 50 per replica -> 4, capped at max 2
    _wait_replicas(app.settings, 2, timeout=150)
    _commit_to_end(kafka_bootstrap, group, topic)  # backlog drained
    _wait_replicas(app.settings, 1, timeout=60)
