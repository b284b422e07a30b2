"""The checkpoint: owns which offsets may be committed, and how (two strategies, one interface).

- ``AtLeastOnceCheckpoint``: an offset counts as done when the broker acknowledged its result or
  dead letter; the contiguous done prefix of each partition is committed every interval.
- ``TransactionalCheckpoint`` (``kafka.exactly_once``): results, dead letters and offsets are
  committed in one Kafka transaction per interval; the worker's in-flight jobs are drained first,
  so a transaction holds exactly the results of the offsets it commits.

The worker calls ``started`` per record, ``on_publish`` per send, ``commit`` on its interval,
``on_revoked`` / ``on_lost`` from the rebalance callbacks and ``close`` once. See docs/architecture.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from workers.consumer import TP, JobConsumer
from workers.offsets import OffsetTracker
from workers.producer import Publisher

log = logging.getLogger(__name__)

# A revocation blocks the consumer's heartbeats: wait this long at most for in-flight work.
REVOKE_GRACE_S = 3.0
# A member leaving while its group rebalances (two consumers scaled down at once) waits this long at most
# for the rebalance to end: the group refuses its final commit until then, and the next owner would redo
# every job since the last commit.
CLOSE_REBALANCE_WAIT_S = 15.0


class Checkpoint(Protocol):
    tracker: OffsetTracker

    def open(self) -> None: ...

    def started(self, tp: TP, offset: int) -> None: ...

    def on_publish(self, tp: TP, offset: int) -> Callable[[], None] | None: ...

    def commit(self) -> None: ...

    def on_revoked(self, partitions: set[TP]) -> None: ...

    def on_lost(self, partitions: set[TP]) -> None: ...

    def close(self, ok: bool) -> None: ...


class _Base:
    def __init__(self, consumer: JobConsumer, publisher: Publisher):
        self.consumer = consumer
        self.publisher = publisher
        self.tracker = OffsetTracker()
        self.closing = False

    def started(self, tp: TP, offset: int) -> None:
        self.tracker.start(tp, offset)

    def _positions(self, leaving: set[TP] | frozenset[TP] = frozenset()) -> dict[TP, int]:
        """Advanced commit positions of partitions this member owns, or is giving up right now
        (a cooperative rebalance drops them from the assignment before the revocation callback)."""
        owned = self.consumer.assignment() | set(leaving)
        return {k: v for k, v in self.tracker.to_commit().items() if k in owned}

    def _await_in_flight(self, partitions: set[TP]) -> None:
        """Up to REVOKE_GRACE_S for the jobs of ``partitions`` to be published; never raises (a slow
        broker ack makes ``flush`` time out: that must not end the loop, see JobConsumer.subscribe)."""
        deadline = time.monotonic() + REVOKE_GRACE_S
        while self.tracker.in_flight(partitions) and (left := deadline - time.monotonic()) > 0:
            try:
                self.publisher.flush(timeout=min(1.0, left))
            except Exception:  # noqa: BLE001 - e.g. KafkaTimeoutError: keep waiting until the deadline
                pass
            time.sleep(0.02)


class AtLeastOnceCheckpoint(_Base):
    def open(self) -> None:
        pass

    def on_publish(self, tp: TP, offset: int) -> Callable[[], None]:
        return lambda: self.tracker.done(tp, offset)

    def commit(self, in_callback: bool = False, leaving: set[TP] | frozenset[TP] = frozenset()) -> None:
        positions = self._positions(leaving)
        if not positions:
            return
        try:
            self.consumer.commit(positions, in_callback=in_callback)
            self.tracker.mark_committed(positions)
        except Exception as exc:  # noqa: BLE001 - e.g. a rebalance in progress: retried next interval
            log.warning("offset commit failed (%r); will retry", exc)

    def on_revoked(self, partitions: set[TP]) -> None:
        """Before losing partitions: let in-flight jobs finish briefly, commit what is done, forget.
        Whatever is still unfinished is redelivered to the next owner."""
        if not self.closing:
            self._await_in_flight(partitions)
            self.commit(in_callback=True, leaving=partitions)
        self.tracker.forget(partitions)

    def on_lost(self, partitions: set[TP]) -> None:
        """Evicted (session expired, fenced): a commit would be refused; the new owner redoes the rest."""
        self.tracker.forget(partitions)

    def close(self, ok: bool) -> None:
        self.publisher.flush(timeout=30)
        if ok:
            self.consumer.wait_stable(CLOSE_REBALANCE_WAIT_S)  # a commit mid-rebalance is refused: lost work
            self.commit()
        self.closing = True  # closing the consumer revokes everything: nothing left to commit then


class TransactionalCheckpoint(_Base):
    def __init__(self, consumer: JobConsumer, publisher: Publisher, drain: Callable[[], bool]):
        super().__init__(consumer, publisher)
        self._drain = drain  # waits until no job is in flight; False = the worker failed meanwhile

    def open(self) -> None:
        self.publisher.init_transactions()
        self.publisher.begin()

    def on_publish(self, tp: TP, offset: int) -> None:
        self.tracker.done(tp, offset)  # visible only when the transaction holding it commits
        return None

    def commit(self, reopen: bool = True, leaving: set[TP] | frozenset[TP] = frozenset()) -> None:
        if not self._drain():
            return
        positions = self._positions(leaving)
        self.publisher.commit_transaction(self.consumer.offsets(positions), self.consumer.group_metadata())
        self.tracker.mark_committed(positions)
        if reopen:
            self.publisher.begin()

    def on_revoked(self, partitions: set[TP]) -> None:
        if not self.closing:
            self.commit(leaving=partitions)
        self.tracker.forget(partitions)

    def on_lost(self, partitions: set[TP]) -> None:
        """Evicted: the open transaction cannot commit these offsets any more; abort it (its results stay
        invisible, the new owner redelivers them) and carry on with a fresh one."""
        if self.closing:
            return
        self._drain()
        self.publisher.abort()
        self.tracker.forget(partitions)
        self.publisher.begin()

    def close(self, ok: bool) -> None:
        if ok:
            self.consumer.wait_stable(CLOSE_REBALANCE_WAIT_S)
            self.commit(reopen=False)
        else:
            self.publisher.abort()  # the restart redelivers everything uncommitted
        self.closing = True
