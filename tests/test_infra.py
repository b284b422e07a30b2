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


def _local_env(tmp_path: Path) -> dict[str, str]:
    """deploy/local scripts pointed at an empty state dir and ports nobody uses: the shared services stay untouched."""
    import socket

    socks = [socket.socket() for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return dict(
        os.environ,
        RERANK_LOCAL_DIR=str(tmp_path),
        KAFKA_LOCAL_PORT=str(ports[0]),
        KAFKA_LOCAL_CONTROLLER_PORT=str(ports[1]),
        REDIS_LOCAL_PORT=str(ports[2]),
    )


def _script(name: str, cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROOT / f"deploy/local/{name}.sh", cmd], env=env, capture_output=True, text=True, timeout=60)


def test_status_and_stop_see_through_zombie_dead_and_recycled_pids(tmp_path):
    """A pid file is a hint, not proof: a zombie, a gone pid or someone else's process is never 'running'."""
    env = _local_env(tmp_path)
    pidfile = tmp_path / "kafka.pid"
    assert _script("kafka", "status", env).returncode == 3

    zombie = subprocess.Popen(["true"])  # not waited for: a zombie child of this test
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        for name in ("kafka", "redis"):
            (tmp_path / f"{name}.pid").write_text(f"{zombie.pid}\n")
            status = _script(name, "status", env)
            assert status.returncode != 0 and "running" not in status.stdout, status.stdout
        assert "zombie" in _script("kafka", "status", env).stdout
        stop = _script("kafka", "stop", env)
        assert stop.returncode == 0 and "zombie" in stop.stderr, stop.stderr
        assert not pidfile.exists()
    finally:
        zombie.wait()

    gone = subprocess.Popen(["true"])
    gone.wait()
    pidfile.write_text(f"{gone.pid}\n")
    status = _script("kafka", "status", env)
    assert status.returncode == 1 and "is gone" in status.stdout, status.stdout

    other = subprocess.Popen(["sleep", "60"])  # a live process that is not our broker (recycled pid)
    try:
        pidfile.write_text(f"{other.pid}\n")
        status = _script("kafka", "status", env)
        assert status.returncode == 1 and "another program" in status.stdout, status.stdout
        stop = _script("kafka", "stop", env)
        assert stop.returncode == 0, stop.stderr
        assert other.poll() is None, "kafka.sh stop signalled a process it did not start"
        assert not pidfile.exists()
    finally:
        other.kill()
        other.wait()


def test_tools_ensure_kcat_provides_kcat_with_every_codec():
    proc = subprocess.run([ROOT / "deploy/local/tools.sh", "ensure-kcat"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"deploy/local/tools.sh ensure-kcat failed:\n{proc.stderr}"
    kcat = proc.stdout.strip().splitlines()[-1]
    version = subprocess.run([kcat, "-V"], capture_output=True, text=True, timeout=30)
    features = version.stdout + version.stderr
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        assert codec in features, f"{kcat} lacks {codec}: {features}"
