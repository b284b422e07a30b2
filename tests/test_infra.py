"""The local infrastructure the whole suite relies on behaves like the real thing."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

ROOT = Path(__file__).resolve().parent.parent


def _consume(bootstrap: str, topic: str, group: str, want: int, timeout_s: float = 30.0) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < want and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500, max_records=want - len(got)).values():
                got.extend(r.value for r in records)
        consumer.commit()
    finally:
        consumer.close()
    return got


def test_produce_consume_commit_resume(kafka_bootstrap, kafka_admin, unique_name):
    topic, group = f"{unique_name}-t", f"{unique_name}-g"
    kafka_admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(10):
        producer.send(topic, f"m{i}".encode())
    producer.flush()
    producer.close()

    first = _consume(kafka_bootstrap, topic, group, want=4)
    assert first == [b"m0", b"m1", b"m2", b"m3"]
    # A second consumer of the same group resumes right after the committed offset.
    second = _consume(kafka_bootstrap, topic, group, want=6)
    assert second == [f"m{i}".encode() for i in range(4, 10)]
    offsets = kafka_admin.list_group_offsets(group)[group]
    assert offsets[TopicPartition(topic, 0)].offset == 10


def test_redis_set_get_expire(redis_url, unique_name):
    client = redis.Redis.from_url(redis_url)
    key = f"{unique_name}:k"
    try:
        client.set(key, b"v", ex=1)
        assert client.get(key) == b"v"
        assert 0 < client.ttl(key) <= 1
        time.sleep(1.2)
        assert client.get(key) is None
    finally:
        client.delete(key)
        client.close()


def test_local_services_start_is_idempotent():
    """`start` on running services is a no-op that reports them, and status sees them."""
    status = subprocess.run([ROOT / "deploy/local/services.sh", "status"], capture_output=True, text=True)
    assert status.returncode == 0, f"local services not running: {status.stdout}{status.stderr}"
    before = status.stdout
    start = subprocess.run([ROOT / "deploy/local/services.sh", "start"], capture_output=True, text=True, timeout=60)
    assert start.returncode == 0, start.stderr
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("REDIS_URL"):
        assert start.stderr.count("using configured") == 2
    else:
        assert "already running" in start.stderr
    after = subprocess.run([ROOT / "deploy/local/services.sh", "status"], capture_output=True, text=True)
    assert after.stdout == before  # same pids: nothing was restarted
