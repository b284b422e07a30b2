"""Finish a group join that kafka-python 3.0.12 would abandon (the "member stuck rebalancing" bug).

kafka-python drives a join as a task on its IO thread and awaits it from ``poll()`` for at most the
poll's timeout, looping ``while need_rejoin()``. A *leader's* rejoin caused by a metadata change
(new partitions, or the first metadata after subscribing) is "needed" only until the leader computes
the assignment, which happens inside that task. So when the poll that started the join gives up
first (the worker polls 100 ms at a time) and the leader's assignment runs before the next poll,
that poll sees ``need_rejoin()`` False and never collects the task: the member stays REBALANCING
with its heartbeat disabled, keeps its old partitions, and the coordinator evicts it a session
timeout later while the rest of the group waits. Two workers joining a group one after the other
hit it about one start in four (CI, 2026-11-23: one worker kept every partition for 20 s, the
other then took them all; ``tests/test_kafka_join_fix.py`` reproduces it deterministically).

``install()`` makes ``need_rejoin()`` also true for such an abandoned join (so ``poll()`` goes back
to it) and has ``join_group_async`` finish it when its task succeeded; a task still in flight is
awaited, and a failed one retried, by the library's own loop. Both act only in that state, so a
kafka-python without the bug is unaffected.
"""

from __future__ import annotations

from typing import Any

_MARK = "_rerank_stream_join_fix"


def install() -> None:
    """Idempotent; called before any consumer is created (``kafka_io.make_consumer``)."""
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
