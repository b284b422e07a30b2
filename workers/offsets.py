"""Per-partition offset tracking: commit only the contiguous prefix of finished offsets.

Jobs finish out of order (a cached job overtakes one waiting for the model), but a Kafka commit
means "everything before this offset is done". So a partition's commit position is the lowest
offset still unfinished (or one past the highest started offset when nothing is unfinished);
an unacknowledged publish holds it back. Gaps in the offset sequence (transaction markers,
compaction) need no special case. Pure logic, no Kafka import: unit-tested in isolation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

Key = tuple[str, int]  # (topic, partition)


class _Partition:
    __slots__ = ("pending", "high", "committed")

    def __init__(self) -> None:
        self.pending: set[int] = set()  # started, result not yet acknowledged
        self.high = -1  # highest offset started
        self.committed = -1  # position last reported by to_commit()

    def position(self) -> int:
        return min(self.pending) if self.pending else self.high + 1


class OffsetTracker:
    """Thread-safe: the poll thread calls start/to_commit/forget, producer callbacks call done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[Key, _Partition] = {}

    def start(self, partition: Key, offset: int) -> None:
        """A record was handed to processing (a partition's records arrive in offset order)."""
        with self._lock:
            part = self._parts.setdefault(partition, _Partition())
            if offset <= part.high:
                return  # redelivered after a seek: its outcome is already accounted for
            part.high = offset
            part.pending.add(offset)

    def done(self, partition: Key, offset: int) -> None:
        """The record's result or dead letter is acknowledged by the broker."""
        with self._lock:
            part = self._parts.get(partition)
            if part is not None:  # None: revoked meanwhile
                part.pending.discard(offset)

    def to_commit(self) -> dict[Key, int]:
        """Partitions whose commit position advanced since last reported -> next offset to consume."""
        with self._lock:
            out = {}
            for key, part in self._parts.items():
                pos = part.position()
                if pos > part.committed and part.high >= 0:
                    out[key] = pos
            return out

    def mark_committed(self, positions: dict[Key, int]) -> None:
        with self._lock:
            for key, pos in positions.items():
                part = self._parts.get(key)
                if part is not None:
                    part.committed = max(part.committed, pos)

    def in_flight(self, partitions: Iterable[Key] | None = None) -> int:
        """Unfinished offsets, of every partition or only of ``partitions``."""
        with self._lock:
            keys = self._parts.keys() if partitions is None else set(partitions) & self._parts.keys()
            return sum(len(self._parts[k].pending) for k in keys)

    def forget(self, partitions: Iterable[Key]) -> None:
        """Partitions were revoked: drop their state (unfinished work is redelivered to the new owner)."""
        with self._lock:
            for p in partitions:
                self._parts.pop(p, None)
