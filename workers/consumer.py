"""A thin wrapper over kafka-python's consumer: typed records, pause/resume all, commit positions.

The worker loop and the checkpoint speak in ``(topic, partition)`` tuples and ``Record`` values;
only this module knows kafka-python's ``TopicPartition`` and ``OffsetAndMetadata``. The client
itself comes from a factory, so unit tests drive the loop with an in-memory fake.
kafka-python's consumer is not thread-safe: every call here happens on the poll thread (or in
its rebalance callbacks, which kafka-python runs on that same thread's poll).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.structs import OffsetAndMetadata

from workers.offsets import Key

log = logging.getLogger(__name__)

TP = Key  # (topic, partition), as offsets.py tracks them


@dataclass(frozen=True)
class Record:
    """One consumed message, detached from the client library."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


class JobConsumer:
    """Subscribes with rebalance callbacks; polls records; pauses, resumes and commits by position."""

    def __init__(self, client: Any):
        self.client = client
        self.paused = False

    def subscribe(
        self,
        topics: list[str],
        on_assigned: Callable[[set[TP]], None],
        on_revoked: Callable[[set[TP]], None],
        on_lost: Callable[[set[TP]], None] | None = None,
    ) -> None:
        """Cooperative rebalances pass only the partitions that move; eager ones pass everything.

        A callback never raises into kafka-python: it would re-raise from ``poll()`` and end the worker
        loop, leaving a member that lost its partitions idle (issue 12). Failures are logged instead.
        """

        def guarded(what: str, callback: Callable[[set[TP]], None], tps: Iterable[TopicPartition]) -> None:
            try:
                callback({(tp.topic, tp.partition) for tp in tps})
            except Exception:
                log.exception("rebalance callback (%s) failed; the consumer keeps going", what)

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
                guarded("revoked", on_revoked, revoked)

            def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
                guarded("assigned", on_assigned, assigned)

            def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
                guarded("lost", on_lost or on_revoked, lost)

        self.client.subscribe(topics, listener=Listener())

    def wait_for_metadata(self, topics: list[str], timeout_s: float = 30.0) -> None:
        """Join only once every topic's partitions are known: a member that joins before a new topic's
        metadata arrives is assigned nothing until the next metadata refresh."""
        deadline = time.monotonic() + timeout_s
        for topic in topics:
            while not self.client.partitions_for_topic(topic) and time.monotonic() < deadline:
                time.sleep(0.1)

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        batch = self.client.poll(timeout_ms=timeout_ms, max_records=max_records)
        return [
            Record(r.topic, r.partition, r.offset, r.key, r.value, tuple(getattr(r, "headers", None) or ()))
            for recs in batch.values()
            for r in recs
        ]

    def assignment(self) -> set[TP]:
        return {(tp.topic, tp.partition) for tp in self.client.assignment()}

    def pause_all(self) -> None:
        if not self.paused:
            self.client.pause(*self.client.assignment())
            self.paused = True

    def resume_all(self) -> None:
        if self.paused:
            self.client.resume(*self.client.paused())
            self.paused = False

    def commit(self, positions: dict[TP, int], *, in_callback: bool = False) -> None:
        """Commit next-offset positions. In a rebalance callback the commit is queued asynchronously:
        kafka-python 3 refuses a blocking commit there, and the async one goes out before the re-join."""
        offsets = self.offsets(positions)
        if in_callback:
            self.client.commit_async(offsets)
        else:
            self.client.commit(offsets)

    @staticmethod
    def offsets(positions: dict[TP, int]) -> dict[TopicPartition, OffsetAndMetadata]:
        """kafka-python's offset map of next-offset positions (for commits and transactions)."""
        return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in positions.items()}

    def group_metadata(self) -> Any:
        return self.client.group_metadata()

    def lag(self) -> dict[TP, int]:
        """High watermark minus position per assigned partition (what the client already knows)."""
        out = {}
        for tp in self.client.assignment():
            high = self.client.highwater(tp)
            if high is not None:
                out[(tp.topic, tp.partition)] = max(0, high - self.client.position(tp))
        return out

    def close(self) -> None:
        self.client.close(autocommit=False)
