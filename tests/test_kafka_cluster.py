"""The local three-broker Kafka (deploy/local/kafka-cluster.sh): topics created from settings get
replication factor 3 and min.insync.replicas=2, and records produced with the workers' producer
(acks=all, idempotent) are all consumed through a SIGKILL of the partition leader and its restart."""

from __future__ import annotations

import threading
import time

import pytest

from load_tests.cluster import KafkaCluster
from schemas.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture
def kafka_cluster(tmp_path):
    cluster = KafkaCluster(tmp_path / "state")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def test_topics_are_replicated_and_a_leader_kill_loses_no_acknowledged_record(kafka_cluster):
    from kafka.admin import ConfigResource, ConfigResourceType

    from workers.kafka_io import make_admin, make_consumer, make_producer
    from workers.topics import ensure_topics

    topic = "cluster.jobs"
    settings = Settings(
        kafka={
            "bootstrap_servers": kafka_cluster.bootstrap,
            "feeds": {"recommendation": {"topic": topic, "instruction": "x"}},
            "results_topic": "cluster.results",
            "dlq_topic": "cluster.dlq",
            "group_id": "cluster.g",
            "auto_create_topics": True,
            "topic_partitions": 2,
            "replication_factor": 3,
            "min_insync_replicas": 2,
        }
    )
    assert sorted(ensure_topics(settings)) == ["cluster.dlq", "cluster.jobs", "cluster.results"]
    admin = make_admin(settings)
    try:
        (described,) = admin.describe_topics([topic])
        assert all(len(p["replica_nodes"]) == 3 for p in described["partitions"]), described
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        assert configs["topic"][topic]["min.insync.replicas"]["value"] == "2", configs
    finally:
        admin.close()

    acked: set[bytes] = set()
    failed: list[BaseException] = []
    received: list[tuple[float, bytes]] = []
    stop = threading.Event()

    def produce() -> None:
        producer = make_producer(settings, linger_ms=0)
        i = 0
        while not stop.is_set():
            key = f"k{i}".encode()
            fut = producer.send(topic, key=key, value=b"v" + key)
            fut.add_callback(lambda _md, k=key: acked.add(k))
            fut.add_errback(failed.append)
            i += 1
            time.sleep(0.02)
        producer.flush(60)
        producer.close()

    def consume() -> None:
        consumer = make_consumer(settings, group_id="cluster.g")
        consumer.subscribe([topic])
        while not consumed.is_set():
            for recs in consumer.poll(timeout_ms=100).values():
                received.extend((time.monotonic(), r.key) for r in recs)
        consumer.close()

    consumed = threading.Event()
    threads = [threading.Thread(target=produce, daemon=True), threading.Thread(target=consume, daemon=True)]
    for t in threads:
        t.start()
    time.sleep(4)
    leader = kafka_cluster.leader(topic, 0)
    killed_at = time.monotonic()
    kafka_cluster.kill_broker(leader)
    time.sleep(8)
    kafka_cluster.start_broker(leader)
    time.sleep(2)
    stop.set()
    threads[0].join(90)  # every send acknowledged or failed: ``acked`` is final
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not acked <= {k for _, k in list(received)}:
        time.sleep(0.2)
    consumed.set()
    threads[1].join(30)
    got = {k for _, k in received}
    times = [t for t, _ in received if t >= killed_at]
    gap = max((b - a for a, b in zip([killed_at, *times], times)), default=float("inf"))
    print(f"\nleader broker {leader} killed: longest consume gap {gap:.1f} s; {len(acked)} acked, {len(failed)} failed")
    assert not failed, failed[:3]
    assert acked and acked <= got, f"{len(acked - got)} acknowledged records never consumed"
    assert gap < 15, f"no record consumed for {gap:.1f} s after the leader kill"
