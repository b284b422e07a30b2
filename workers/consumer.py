"""A thin wrapper over kafka-python's consumer: typed records, pause/resume per topic, commit positions.

The worker loop and the checkpoint speak in ``(topic, partition)`` tuples and ``Record`` values;
only this module knows kafka-python's ``TopicPartition`` and ``OffsetAndMetadata``. The client
itself comes from a factory, so unit tests drive the loop with an in-memory fake.
kafka-python's consumer is not thread-safe: every call here happens on the poll thread (or in
its rebalance callbacks, which kafka-python runs on that same thread's poll).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from kafka import AsyncConsumerRebalanceListener, TopicPartition
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
        self._callback_commits: list[Any] = []  # commits a rebalance callback queued, awaited before it returns

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
        The listener is kafka-python's async kind so that a revocation's offset commit is *awaited*
        before the rebalance goes on: queued and forgotten, it raced the next owner's offset fetch (or
        hit a rebalance already in progress) and the next owner redid every job since the last commit.
        """
        consumer = self

        def guarded(what: str, callback: Callable[[set[TP]], None], tps: Iterable[TopicPartition]) -> None:
            try:
                callback({(tp.topic, tp.partition) for tp in tps})
            except Exception:
                log.exception("rebalance callback (%s) failed; the consumer keeps going", what)

        async def settle() -> None:
            pending, consumer._callback_commits = consumer._callback_commits, []
            for commit in pending:
                try:
                    await commit
                except Exception as exc:  # noqa: BLE001 - the next owner redoes those jobs (at-least-once)
                    log.warning("offset commit on revocation failed (%r); the next owner redoes those jobs", exc)

        class Listener(AsyncConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
                guarded("revoked", on_revoked, revoked)
                await settle()

            async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
                guarded("assigned", on_assigned, assigned)

            async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
                guarded("lost", on_lost or on_revoked, lost)
                await settle()

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

    def rebalancing(self) -> bool:
        """The member is (re)joining its group: offsets cannot be committed until it is stable again."""
        from kafka.structs import MemberState

        return getattr(self.client.group_metadata(), "state", None) == MemberState.REBALANCING

    def wait_stable(self, timeout_s: float) -> bool:
        """Finish a rebalance in progress, fetching nothing (records a poll still returns are not
        processed, so not committed: redelivered to their next owner). True when stable."""
        deadline = time.monotonic() + timeout_s
        while self.rebalancing() and time.monotonic() < deadline:
            self.pause_all()
            self.client.poll(timeout_ms=100, max_records=1)
        return not self.rebalancing()

    def pause_topics(self, topics: Collection[str]) -> None:
        """Pause the assigned partitions of these topics (a feed at its in-flight budget)."""
        paused = self.client.paused()
        tps = [tp for tp in self.client.assignment() if tp.topic in topics and tp not in paused]
        if tps:
            self.client.pause(*tps)

    def resume_topics(self, topics: Collection[str]) -> None:
        tps = [tp for tp in self.client.paused() if tp.topic in topics]
        if tps:
            self.client.resume(*tps)

    def pause_all(self) -> None:
        self.client.pause(*self.client.assignment())

    def commit(self, positions: dict[TP, int], *, in_callback: bool = False) -> None:
        """Commit next-offset positions. In a rebalance callback kafka-python 3 refuses a blocking commit:
        the commit is sent asynchronously and the listener awaits it before returning (``subscribe``)."""
        offsets = self.offsets(positions)
        if in_callback:
            pending = self.client.commit_async(offsets)
            if hasattr(pending, "__await__"):
                self._callback_commits.append(pending)
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
