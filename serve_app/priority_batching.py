"""Batches for one device, highest priority first: what lets moderation pass a recommendation burst.

``@serve.batch`` serves its queue first come, first served, so a job of an urgent feed waits behind
every queued job of a bulk feed. Here queued requests wait in a heap ordered by
``ScoreRequest.priority`` (higher first; arrival order within a priority), and each batch holds
requests of ONE priority only, up to ``max_batch_size`` jobs and ``max_batch_documents`` documents:
an urgent request waits at most for the batch already computing (batches are not preempted), and is
never slowed by bulk work riding in its own batch. One batch computes at a time (the engine owns the
device); the next one forms while it computes, after up to ``wait_s`` for more requests when it
is not full. Pure asyncio, no Ray: the ``Reranker`` replica feeds it, tests drive it directly.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas.scoring import ScoreRequest

RunBatch = Callable[[list[ScoreRequest]], Awaitable[Sequence[Any]]]


@dataclass(order=True)
class _Queued:
    rank: tuple[int, int]  # (-priority, arrival): heapq pops the highest priority, then the oldest
    request: ScoreRequest = field(compare=False)
    future: asyncio.Future = field(compare=False)


class PriorityBatcher:
    def __init__(self, run: RunBatch, max_batch_size: int, wait_s: float = 0.0, max_batch_documents: int | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.max_batch_documents = max_batch_documents
        self._heap: list[_Queued] = []
        self._arrivals = itertools.count()
        self._ready: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self.busy_s = 0.0  # time spent computing batches: busy_s / elapsed = how saturated the replica is
        self.batches = 0

    @property
    def queued(self) -> int:
        return len(self._heap)

    async def submit(self, request: ScoreRequest) -> Any:
        """The result of ``run`` for this request, once a batch holding it has computed."""
        if self._ready is None:
            self._ready = asyncio.Event()
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._serve_batches())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, _Queued((-int(request.priority), next(self._arrivals)), request, future))
        self._ready.set()
        return await future

    def next_batch(self) -> list[_Queued]:
        """Pop the next batch: the highest waiting priority only, in arrival order, within both caps."""
        batch: list[_Queued] = []
        documents = 0
        while self._heap and len(batch) < self.max_batch_size:
            head = self._heap[0]
            if head.future.done():  # the caller gave up (timeout, cancelled): nothing to compute
                heapq.heappop(self._heap)
                continue
            if batch and head.rank[0] != batch[0].rank[0]:
                break  # one priority per batch
            n = len(head.request.documents)
            if batch and self.max_batch_documents is not None and documents + n > self.max_batch_documents:
                break
            batch.append(heapq.heappop(self._heap))
            documents += n
        return batch

    async def _serve_batches(self) -> None:
        assert self._ready is not None
        while True:
            while not self._heap:
                self._ready.clear()
                await self._ready.wait()
            if len(self._heap) < self.max_batch_size and self.wait_s > 0:
                await asyncio.sleep(self.wait_s)  # let a batch fill, as @serve.batch's batch_wait_timeout_s
            batch = self.next_batch()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await self._run([q.request for q in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} requests returned {len(results)} results")
            except asyncio.CancelledError:  # the replica is going away: nobody waits forever
                for q in batch:
                    q.future.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - the batch's callers get the error, the loop goes on
                for q in batch:
                    if not q.future.done():
                        q.future.set_exception(exc)
                continue
            finally:
                self.busy_s += time.perf_counter() - started
                self.batches += 1
            for q, result in zip(batch, results):
                if not q.future.done():
                    q.future.set_result(result)
