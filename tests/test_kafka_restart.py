"""A crashed local broker restarts on its own data: topics, messages and committed offsets survive.

Each test runs its own broker (own state dir, own ports) through deploy/local/kafka.sh, never the
shared one. The broker is started under a child-subreaper "holder" process that never reaps it, so
its SIGKILL leaves a real zombie: the case where `kafka.sh start` used to say "already running".
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = ROOT / "deploy/local/kafka.sh"
TOPIC, GROUP, PER_PARTITION = "restart-jobs", "restart-group", 20
COMMITTED = {0: 7, 1: 5}  # the group's position: deliberately not the end of the log

# Becomes the broker's parent (PR_SET_CHILD_SUBREAPER) and does not reap it until stdin closes.
HOLDER = r"""
import ctypes, json, os, subprocess, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed")
start = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps([start.returncode, start.stderr]), flush=True)
sys.stdin.read()
while True:  # reap what died (the zombie broker); live orphans go on to init
    try:
        if os.waitpid(-1, os.WNOHANG)[0] == 0:
            break
    except ChildProcessError:
        break
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalKafka:
    """One broker of our own, driven only through deploy/local/kafka.sh."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.port, cport = _free_ports(2)
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            RERANK_LOCAL_DIR=str(run_dir),
            KAFKA_LOCAL_PORT=str(self.port),
            KAFKA_LOCAL_CONTROLLER_PORT=str(cport),
            PYTHON=sys.executable,
        )
        self.holder: subprocess.Popen[str] | None = None
        self.pids: set[int] = set()

    def sh(self, cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KAFKA_SH), cmd], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )

    def start_held(self) -> str:
        """`kafka.sh start` under the holder; returns the script's stderr."""
        self.holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(KAFKA_SH), "start"],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        assert line, "the holder process died before kafka.sh start returned"
        rc, err = json.loads(line)
        assert rc == 0, f"kafka.sh start failed (rc={rc}):\n{err}"
        return err

    def pid(self) -> int:
        pid = int((self.run_dir / "kafka.pid").read_text())
        self.pids.add(pid)
        return pid

    def cluster_id(self) -> str:
        meta = (self.run_dir / "kafka-data/meta.properties").read_text()
        return next(line.split("=", 1)[1] for line in meta.splitlines() if line.startswith("cluster.id="))

    def shutdown(self) -> None:
        """Stop and wipe, whatever state the test left: never leave a broker behind."""
        try:
            self.sh("stop", timeout=60)
        finally:
            for pid in self.pids:
                if _proc_state(pid) not in (None, "Z"):
                    os.kill(pid, signal.SIGKILL)
            if self.holder is not None:
                self.holder.communicate(timeout=30)  # closes its stdin: it reaps the zombie and exits
            self.sh("reset", timeout=60)


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[LocalKafka]:
    kafka = LocalKafka(tmp_path / "state")
    try:
        yield kafka
    finally:
        kafka.shutdown()


def _produce(bootstrap: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    futures = [
        producer.send(TOPIC, value=f"p{p}-m{i}".encode(), partition=p) for i in range(PER_PARTITION) for p in (0, 1)
    ]
    producer.flush()
    for fut in futures:
        fut.get(timeout=10)  # every message acknowledged by the broker (acks=all)
    producer.close()


def _drain(consumer: KafkaConsumer, want: int, timeout_s: float = 30.0) -> dict[int, list[str]]:
    got: dict[int, list[str]] = {0: [], 1: []}
    deadline = time.monotonic() + timeout_s
    while sum(map(len, got.values())) < want and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            got[tp.partition].extend(r.value.decode() for r in records)
    return got


def _consume_and_commit(bootstrap: str) -> None:
    """A group member reads everything, then commits a position in the middle of each partition."""
    consumer = KafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        got = _drain(consumer, 2 * PER_PARTITION)
        assert sum(map(len, got.values())) == 2 * PER_PARTITION
        consumer.commit({TopicPartition(TOPIC, p): OffsetAndMetadata(o, "", -1) for p, o in COMMITTED.items()})
    finally:
        consumer.close()


def _group_offsets(bootstrap: str, timeout_s: float = 30.0) -> dict[int, int]:
    """The group's committed offsets; retried while the restarted coordinator loads __consumer_offsets."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                offsets = admin.list_group_offsets(GROUP)[GROUP]
                return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == TOPIC}
            except Exception:  # e.g. CoordinatorLoadInProgress right after the restart; re-raised at the deadline
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        admin.close()


def _assert_data_intact(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert TOPIC in admin.list_topics()
        (desc,) = admin.describe_topics([TOPIC])
        assert len(desc["partitions"]) == 2
    finally:
        admin.close()
    # Every acknowledged message, in order, read without a group.
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        reader.assign([TopicPartition(TOPIC, p) for p in (0, 1)])
        reader.seek_to_beginning()
        got = _drain(reader, 2 * PER_PARTITION)
    finally:
        reader.close()
    assert got == {p: [f"p{p}-m{i}" for i in range(PER_PARTITION)] for p in (0, 1)}
    # The group's position survived, and a member of the group resumes right there.
    assert _group_offsets(bootstrap) == COMMITTED
    member = KafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    try:
        resumed = _drain(member, sum(PER_PARTITION - o for o in COMMITTED.values()))
    finally:
        member.close()
    assert resumed == {p: [f"p{p}-m{i}" for i in range(o, PER_PARTITION)] for p, o in COMMITTED.items()}


@pytest.mark.timeout(240)
def test_restart_after_sigkill_keeps_topics_messages_and_offsets(own_kafka: LocalKafka):
    kafka = own_kafka
    err = kafka.start_held()
    assert "formatting new data directory" in err
    first_pid, cluster_id = kafka.pid(), kafka.cluster_id()
    assert (kafka.run_dir / "kafka-cluster-id").read_text().strip() == cluster_id
    status = kafka.sh("status")
    assert status.returncode == 0 and status.stdout.startswith("kafka: running"), status.stdout

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
    admin.close()
    _produce(kafka.bootstrap)
    _consume_and_commit(kafka.bootstrap)
    assert _group_offsets(kafka.bootstrap) == COMMITTED

    # Crash: SIGKILL the JVM. Its parent (the holder) never reaps it: it stays a zombie.
    os.kill(first_pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while (_proc_state(first_pid) != "Z" or _port_open(kafka.port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _proc_state(first_pid) == "Z", f"broker pid {first_pid} is not a zombie: {_proc_state(first_pid)}"
    assert not _port_open(kafka.port)

    status = kafka.sh("status")
    assert status.returncode == 1, status.stdout
    assert "zombie" in status.stdout and not status.stdout.startswith("kafka: running"), status.stdout

    start = kafka.sh("start")
    assert start.returncode == 0, start.stderr
    assert "already running" not in start.stderr
    assert "zombie" in start.stderr and "reusing existing data" in start.stderr, start.stderr
    assert "formatting" not in start.stderr, start.stderr
    second_pid = kafka.pid()
    assert second_pid != first_pid
    assert kafka.cluster_id() == cluster_id
    assert (kafka.run_dir / "kafka-cluster-id").read_text().strip() == cluster_id
    _assert_data_intact(kafka.bootstrap)

    # Stale pid file naming a process that is gone (reaped crash): start must not believe it.
    stop = kafka.sh("stop")
    assert stop.returncode == 0, stop.stderr
    assert kafka.sh("status").returncode == 3
    gone = subprocess.Popen(["true"])
    gone.wait()
    (kafka.run_dir / "kafka.pid").write_text(f"{gone.pid}\n")
    status = kafka.sh("status")
    assert status.returncode == 1 and "is gone" in status.stdout, status.stdout
    start = kafka.sh("start")
    assert start.returncode == 0, start.stderr
    assert "is gone" in start.stderr and "reusing existing data" in start.stderr, start.stderr
    kafka.pid()
    assert kafka.cluster_id() == cluster_id
    assert _group_offsets(kafka.bootstrap) == COMMITTED

    # Only an explicit reset wipes.
    reset = kafka.sh("reset")
    assert reset.returncode == 0, reset.stderr
    assert not (kafka.run_dir / "kafka-data").exists()
    assert not (kafka.run_dir / "kafka-cluster-id").exists()
    assert kafka.sh("status").returncode == 3
