"""In-memory stand-ins for kafka-python's consumer and producer, for unit tests of the worker loop.

They implement only what workers/consumer.py and workers/producer.py call, with the same
semantics that matter to the loop: per-partition positions, pause/resume, a rebalance listener,
producer futures that resolve when the test (or flush) says the broker acknowledged them, and
a log of transactional calls. Integration with the real broker is proven elsewhere.
"""

from __future__ import annotations

import inspect
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list = field(default_factory=list)


class FakeConsumer:
    def __init__(self, partitions: int = 1):
        self.lock = threading.Lock()
        self.n_partitions = partitions
        self.logs: dict[TopicPartition, list[FakeRecord]] = defaultdict(list)
        self.positions: dict[TopicPartition, int] = {}
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self.listener: Any = None
        self.topics: list[str] = []
        self.commits: list[dict[TopicPartition, int]] = []  # every commit, in order (sync and async)
        self.pause_events: list[str] = []
        self.closed = False

    # -- test controls ----------------------------------------------------------------------------
    def add(
        self, topic: str, value: bytes | None, partition: int = 0, key: bytes | None = None, headers: list | None = None
    ) -> int:
        with self.lock:
            tp = TopicPartition(topic, partition)
            offset = len(self.logs[tp])
            self.logs[tp].append(FakeRecord(topic, partition, offset, key, value, list(headers or [])))
            return offset

    def revoke(self, tps: set[TopicPartition], cooperative: bool = False) -> None:
        """A rebalance takes partitions away (the listener runs as kafka-python would run it: eager
        before the assignment changes, cooperative after)."""
        if not cooperative:
            self._notify(self.listener.on_partitions_revoked, tps)
        with self.lock:
            self._assigned -= tps
        if cooperative:
            self._notify(self.listener.on_partitions_revoked, tps)

    @staticmethod
    def _notify(method: Any, tps: set[TopicPartition]) -> None:
        """Call a listener method; an async one (kafka-python's AsyncConsumerRebalanceListener) is run to
        its end here, as kafka-python's loop would (the fake's commits are immediate: nothing to wait on)."""
        result = method(tps)
        if inspect.iscoroutine(result):
            try:
                while True:
                    result.send(None)
            except StopIteration:
                pass

    def committed(self, tp: TopicPartition) -> int | None:
        found = [c[tp] for c in self.commits if tp in c]
        return found[-1] if found else None

    # -- the kafka-python surface ------------------------------------------------------------------
    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n_partitions))

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.topics, self.listener = list(topics), listener

    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict:
        if not self._assigned and self.topics:
            with self.lock:
                self._assigned = {TopicPartition(t, p) for t in self.topics for p in range(self.n_partitions)}
                for tp in self._assigned:
                    self.positions.setdefault(tp, 0)
            self._notify(self.listener.on_partitions_assigned, set(self._assigned))
        out: dict[TopicPartition, list[FakeRecord]] = {}
        with self.lock:
            for tp in sorted(self._assigned - self._paused):
                start = self.positions[tp]
                recs = self.logs[tp][start : start + max_records]
                if recs:
                    out[tp] = recs
                    self.positions[tp] = start + len(recs)
        if not out:
            threading.Event().wait(min(timeout_ms, 20) / 1000)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused |= set(tps)
        self.pause_events.append("pause")

    def resume(self, *tps: TopicPartition) -> None:
        self._paused -= set(tps)
        self.pause_events.append("resume")

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def commit(self, offsets: dict) -> None:
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    commit_async = commit

    def group_metadata(self) -> str:
        return "group-metadata"

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.logs[tp])

    def position(self, tp: TopicPartition) -> int:
        return self.positions.get(tp, 0)

    def close(self, autocommit: bool = False) -> None:
        if self._assigned:
            self._notify(self.listener.on_partitions_revoked, set(self._assigned))
        self._assigned = set()
        self.closed = True


class FakeFuture:
    def __init__(self) -> None:
        self.callbacks: list = []
        self.errbacks: list = []
        self.done = False

    def add_callback(self, fn) -> FakeFuture:
        self.callbacks.append(fn)
        return self

    def add_errback(self, fn) -> FakeFuture:
        self.errbacks.append(fn)
        return self

    def ack(self) -> None:
        if not self.done:
            self.done = True
            for fn in self.callbacks:
                fn("metadata")

    def fail(self, exc: BaseException) -> None:
        self.done = True
        for fn in self.errbacks:
            fn(exc)


class FakeProducer:
    """Sends are acknowledged at once unless ``hold`` is set; then ``ack_all`` or ``flush`` acks them."""

    def __init__(self, hold: bool = False):
        self.lock = threading.Lock()
        self.hold = hold
        self.sent: list[tuple[str, bytes | None, bytes]] = []  # (topic, key, value)
        self.headers: list[list | None] = []  # headers of each send, same order as sent
        self.pending: list[FakeFuture] = []
        self.events: list[Any] = []  # transactional calls and sends, in order
        self.closed = False

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None) -> FakeFuture:
        fut = FakeFuture()
        with self.lock:
            self.sent.append((topic, key, value))
            self.headers.append(headers)
            self.events.append(("send", topic))
            self.pending.append(fut)
        if not self.hold:
            self._ack_pending()
        return _Deferred(fut, self)

    def _ack_pending(self) -> None:
        with self.lock:
            pending, self.pending = self.pending, []
        for fut in pending:
            fut.ack()

    def ack_all(self) -> None:
        self._ack_pending()

    def flush(self, timeout: float | None = None) -> None:
        if not self.hold:
            self._ack_pending()

    def init_transactions(self) -> None:
        self.events.append("init")

    def begin_transaction(self) -> None:
        self.events.append("begin")

    def send_offsets_to_transaction(self, offsets: dict, group_metadata: Any) -> None:
        self.events.append(("offsets", {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}))

    def commit_transaction(self) -> None:
        self.events.append("commit")

    def abort_transaction(self) -> None:
        self.events.append("abort")

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def topic_values(self, topic: str) -> list[bytes]:
        return [v for t, _, v in self.sent if t == topic]


class _Deferred:
    """A future whose callbacks registered after an immediate ack still run (like kafka-python's)."""

    def __init__(self, fut: FakeFuture, producer: FakeProducer):
        self.fut = fut

    def add_callback(self, fn) -> _Deferred:
        if self.fut.done:
            fn("metadata")
        else:
            self.fut.add_callback(fn)
        return self

    def add_errback(self, fn) -> _Deferred:
        self.fut.add_errback(fn)
        return self
