"""Two kafka-python 3.0.12 bugs that stall a consumer for good, fixed where they live.

**An abandoned join** (the "member stuck rebalancing"). kafka-python drives a join as a task on its
IO thread and awaits it from ``poll()`` for at most the poll's timeout, looping ``while
need_rejoin()``. A *leader's* rejoin caused by a metadata change (new partitions, or the first
metadata after subscribing) is "needed" only until the leader computes the assignment, which
happens inside that task. So when the poll that started the join gives up first (the worker polls
100 ms at a time) and the assignment runs before the next poll, that poll sees ``need_rejoin()``
False and never collects the task: the member stays REBALANCING with its heartbeat off, keeps its
old partitions, and is evicted a session timeout later while the group waits. Two workers joining
one after the other hit it about one start in four (CI, 2026-11-23). The fix makes
``need_rejoin()`` true for such a join (so ``poll()`` goes back to it) and has ``join_group_async``
finish it when its task succeeded; one in flight is awaited, a failed one retried, by the library.

**Parked records never handed back** (the "partition stalled for good" under per-feed pausing).
The fetcher parks the leftover records of a partition paused mid-way and restores them on resume
only while its in-line slot ``_next_partition_records`` is None; but a fully taken slot keeps its
drained (falsy) object, so once any other partition's records went through it the parked ones are
never restored, and the partition, still marked as holding parked data, is never fetched again.
The fix empties a drained slot before each ``fetched_records``.

Both are reproduced deterministically against the broker (tests/test_kafka_python_fixes.py) and
act only in the broken state, so a kafka-python without the bugs is unaffected.
"""

from __future__ import annotations

from typing import Any

_MARK = "_rerank_stream_fix"  # marks an installed wrapper (install() is idempotent)


def install() -> None:
    """Idempotent; called before any consumer is created (``kafka_io.make_consumer``)."""
    _fix_abandoned_join()
    _fix_parked_records()


def _fix_abandoned_join() -> None:
    from kafka.coordinator.base import BaseCoordinator
    from kafka.coordinator.consumer import ConsumerCoordinator

    if getattr(ConsumerCoordinator.need_rejoin, _MARK, False):
        return
    need_rejoin = ConsumerCoordinator.need_rejoin
    join_group_async = BaseCoordinator.join_group_async

    def abandoned(coordinator: Any) -> bool:
        """A join started (``rejoining``) whose task nobody collected, and that the library no longer asks for."""
        return getattr(coordinator, "_join_task", None) is not None and getattr(coordinator, "rejoining", False)

    def fixed_need_rejoin(self: Any) -> bool:
        return need_rejoin(self) or abandoned(self)  # poll() joins only when this is True

    async def fixed_join_group_async(self: Any, timeout_ms: Any = None) -> bool:
        task = self._join_task
        if abandoned(self) and not need_rejoin(self) and task.is_done and task.succeeded():
            await _complete(self, task.value)
            return True
        # a task in flight is awaited by the library's loop; a failed one is retried by it
        return await join_group_async(self, timeout_ms)

    setattr(fixed_need_rejoin, _MARK, True)
    ConsumerCoordinator.need_rejoin = fixed_need_rejoin  # type: ignore[method-assign]
    BaseCoordinator.join_group_async = fixed_join_group_async  # type: ignore[method-assign]


async def _complete(coordinator: Any, assignment: bytes) -> None:
    """What the library does once it collects a successful join: stable, heartbeat on, listeners called."""
    from kafka.structs import MemberState

    coordinator._join_task = None
    with coordinator._lock:
        coordinator.rejoining = False
        coordinator.rejoin_needed = False
        coordinator.state = MemberState.STABLE
        coordinator._enable_heartbeat()
    generation = coordinator._generation
    await coordinator._on_join_complete_async(
        generation.generation_id, generation.member_id, generation.protocol, assignment
    )


def _fix_parked_records() -> None:
    from kafka.consumer.fetcher import Fetcher

    fetched_records = Fetcher.fetched_records
    if getattr(fetched_records, _MARK, False):
        return

    def fixed_fetched_records(self: Any, *args: Any, **kwargs: Any) -> Any:
        slot = getattr(self, "_next_partition_records", None)
        if slot is not None and not slot:  # drained: the slot is free, parked records may come back
            self._next_partition_records = None
        return fetched_records(self, *args, **kwargs)

    setattr(fixed_fetched_records, _MARK, True)
    Fetcher.fetched_records = fixed_fetched_records  # type: ignore[method-assign]
