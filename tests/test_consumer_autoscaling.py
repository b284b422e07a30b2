"""Cluster mode consumers: the lag policy's rule (activation, partition cap, stuck partitions), and
the Kafka consumers as Ray Serve replicas scaling 1 -> 3 on a real backlog and back to 1, every job
answered, duplicates only inside the documented window (identical rankings)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from serve_app.autoscaling import ConsumerLagPolicy, StuckPartitions
from serve_app.lag import LagReading
from tests.fixtures_worker import make_jobs
from workers import consumer_deployment

P = [("jobs", p) for p in range(4)]


class Readings:
    def __init__(self) -> None:
        self.reading: LagReading | None = None  # no reading yet: read() fails, as with a broker down

    def set(self, lags: list[int], committed: list[int | None]) -> None:
        self.reading = LagReading(sum(lags), dict(zip(P, lags)), committed=dict(zip(P, committed)))

    def read(self) -> LagReading:
        if self.reading is None:
            raise ConnectionError("no broker")
        return LagReading(self.reading.total, self.reading.partitions, committed=self.reading.committed)

    def close(self) -> None:
        pass


def _ctx(current: int, lo: int = 1, hi: int = 8) -> SimpleNamespace:
    return SimpleNamespace(
        current_num_replicas=current,
        total_num_requests=0.0,
        policy_state={},
        capacity_adjusted_min_replicas=lo,
        capacity_adjusted_max_replicas=hi,
        deployment_name="KafkaConsumer",
    )


def _fresh(policy: ConsumerLagPolicy, source: Readings, timeout: float = 5) -> None:
    assert source.reading is not None
    want = source.reading.total
    deadline = time.monotonic() + timeout
    while (r := policy.current_reading()) is None or r.total != want:
        assert time.monotonic() < deadline, "no fresh lag reading"
        time.sleep(0.02)


def test_consumer_policy_activation_partition_cap_and_stuck_partitions():
    source = Readings()
    policy = ConsumerLagPolicy(
        source=source, lag_per_replica=100, poll_interval_s=0.05, activation_lag=10, stuck_after_s=0.5
    )
    assert policy(_ctx(2))[0] == 2  # no reading yet: hold the count
    source.set([3, 3, 2, 0], [5, 5, 5, 5])
    _fresh(policy, source)
    assert policy(_ctx(2))[0] == 1  # 8 jobs <= activation 10: min
    source.set([300, 300, 300, 300], [6, 6, 6, 6])
    _fresh(policy, source)
    assert policy(_ctx(1))[0] == 4  # 1200 / 100 = 12, capped at the 4 partitions (max 8)
    assert policy(_ctx(1, hi=3))[0] == 3  # and at max
    # p0 stops moving with a huge backlog; the others drain: p0 alone must not pin the count at max.
    source.set([100_000, 50, 50, 0], [7, 100, 100, 100])
    _fresh(policy, source)
    assert policy(_ctx(4))[0] == 4  # not stuck yet
    time.sleep(0.7)
    source.set([100_000, 40, 40, 0], [7, 110, 110, 100])  # the others keep committing
    _fresh(policy, source)
    assert policy(_ctx(4))[0] == 1  # p0 left out: 80 jobs -> 1
    assert policy.decisions[-1]["stuck"] == [P[0]]
    source.set([100_000, 50, 50, 0], [8, 100, 100, 100])  # p0 moves again: counted again
    _fresh(policy, source)
    assert policy(_ctx(1))[0] == 4


def test_stuck_partitions_are_not_judged_without_consumers():
    stuck = StuckPartitions(after_s=1)
    lags, committed = {P[0]: 50}, {P[0]: None}
    assert stuck.update(lags, committed, 0.0) == set()
    assert stuck.update(lags, committed, 2.0) == {P[0]}
    assert stuck.update({P[0]: 0}, committed, 3.0) == set()  # drained: forgotten
    policy = ConsumerLagPolicy(source=Readings(), lag_per_replica=10, activation_lag=0, stuck_after_s=0.01)
    policy._reading = LagReading(500, {P[0]: 500}, committed={P[0]: None})
    for _ in range(3):  # 0 replicas: nobody commits, yet the backlog must bring the first consumer
        assert policy(_ctx(0, lo=0))[0] >= 1
        time.sleep(0.02)


def test_deployment_options_cap_consumers_at_the_partitions():
    from schemas.settings import Settings

    s = Settings(worker={"min_consumers": 2, "max_consumers": 16, "lag_per_consumer": 50, "activation_lag": 7})
    opts = consumer_deployment.deployment_options(s, partitions=6)
    auto = opts["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"]) == (2, 6)
    kwargs = auto["policy"]["policy_kwargs"]
    assert (
        kwargs["lag_per_replica"] == 50 and kwargs["activation_lag"] == 7 and kwargs["topics"] == s.kafka.input_topics
    )
    assert consumer_deployment.bounds(s, 1) == (1, 1)
    assert opts["graceful_shutdown_timeout_s"] > s.worker.scoring_timeout_s


# -- real Serve, real Kafka ------------------------------------------------------------------------


def _group_members(settings) -> int:
    """Members of the consumer group that own partitions (what is really consuming)."""
    from workers.kafka_io import make_admin

    admin = make_admin(settings)
    try:
        group = admin.describe_groups([settings.kafka.group_id])[settings.kafka.group_id]
    finally:
        admin.close()
    owning = [m for m in group["members"] if (m.get("member_assignment") or {}).get("assigned_partitions")]
    return len(owning)


@pytest.mark.slow
def test_consumers_scale_up_on_a_real_backlog_and_back_down(make_pipeline):
    p = make_pipeline(
        RERANK_WORKER_MIN_CONSUMERS="1",
        RERANK_WORKER_MAX_CONSUMERS="3",
        RERANK_WORKER_LAG_PER_CONSUMER="40",
        RERANK_WORKER_ACTIVATION_LAG="5",
        RERANK_WORKER_CONSUMER_UPSCALE_DELAY_S="1",
        RERANK_WORKER_CONSUMER_DOWNSCALE_DELAY_S="3",
        RERANK_WORKER_CONSUMER_NUM_CPUS="0",
        RERANK_WORKER_MAX_IN_FLIGHT="2",
        RERANK_SERVE_LAG_POLL_INTERVAL_S="0.5",
        RERANK_SERVE_METRICS_INTERVAL_S="0.5",
        RERANK_SERVE_LOOK_BACK_PERIOD_S="1",
    )
    s = p.settings
    backlog = make_jobs("b", 300, docs=16) + make_jobs("m", 100, docs=16, feed="moderation")
    p.produce(backlog)
    seen: list[tuple[float, int, int]] = []  # (t, running replicas, group members owning partitions)
    stop = threading.Event()
    errors: list[str] = []

    def sample() -> None:
        while not stop.is_set():
            try:
                seen.append((time.monotonic(), len(consumer_deployment.replicas(s)), _group_members(s)))
            except Exception as exc:  # noqa: BLE001 - a sample may fail mid-rebalance
                errors.append(repr(exc))
            stop.wait(0.5)

    t0 = time.monotonic()
    consumer_deployment.start(s)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        p.wait_for([j.job_id for j in backlog], timeout=120)
        drained = time.monotonic()
        up = max((n for _, n, _ in seen), default=0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (seen and seen[-1][1] == 1 and seen[-1][2] == 1):
            time.sleep(0.5)
        down = time.monotonic()
        assert seen and seen[-1][1:] == (1, 1), f"did not scale back to 1 consumer: {seen[-5:]} {errors[-3:]}"
        late = make_jobs("late", 8, docs=4)  # the one consumer left owns every partition now
        p.produce(late)
        p.wait_for([j.job_id for j in late], timeout=60)
    finally:
        stop.set()
        sampler.join(5)
        consumer_deployment.stop(s)
    members = max((m for _, _, m in seen), default=0)
    print(
        f"\nconsumers: scaled up to {up} replicas ({members} group members) in {drained - t0:.1f} s of backlog,"
        f" back to 1 {down - drained:.1f} s after it drained; duplicates {sum(len(v) - 1 for v in p.results.values())}"
    )
    assert up == 3 and members == 3, f"never reached 3 consumers: {seen}"
    dupes = {j: rs for j, rs in p.results.items() if len(rs) > 1}
    for rs in dupes.values():  # a duplicate is the same job ranked again by the same model
        assert all([(r.id, r.rank) for r in x.ranked] == [(r.id, r.rank) for r in rs[0].ranked] for x in rs)
    # The window (docs/architecture.md "Delivery guarantee"): on a rebalance, jobs of a moving partition
    # that were not committed yet (held back behind a slower earlier offset, or finished while the group
    # rebalanced: kafka-python refuses commits then). So every copy comes from a different consumer: one
    # consumer never ranks a job twice, and a stable group reprocesses nothing.
    copies = {j: [r.worker_id for r in rs] for j, rs in dupes.items()}
    assert all(len(set(ids)) == len(ids) for ids in copies.values()), copies
    assert sum(len(rs) - 1 for rs in dupes.values()) < len(backlog) // 2, f"{len(dupes)} jobs ranked twice: {copies}"
    assert not p.dead_letters
    committed = p.committed()
    assert sum(committed.values()) == len(backlog) + len(late), f"offsets not all committed: {committed}"
