"""Moderation before recommendation: the replica's priority batching (pure asyncio, no Ray) and the
worker's per-feed in-flight budgets (the real loop with fake Kafka clients). How much it buys under a
saturating burst is measured by load_tests/bench_priority.py, not asserted with timings here."""

from __future__ import annotations

import asyncio
import threading

import pytest

from schemas.scoring import ScoreRequest
from serve_app.priority_batching import PriorityBatcher


def _req(name: str, priority: int = 0, docs: int = 1) -> ScoreRequest:
    return ScoreRequest(query=name, documents=["d"] * docs, priority=priority)


class Recorder:
    """A run function that records each batch (query names) and can hold the first batch open."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.hold_first = True
        self.fail_on: str | None = None

    async def __call__(self, requests: list[ScoreRequest]) -> list[str]:
        names = [r.query for r in requests]
        self.batches.append(names)
        if self.hold_first and len(self.batches) == 1:
            await self.release.wait()
        if self.fail_on in names:
            raise RuntimeError("model failed")
        return [f"scored {n}" for n in names]


def test_waiting_high_priority_goes_first_one_priority_per_batch_fifo_within():
    async def scenario() -> tuple[list[list[str]], list[str]]:
        run = Recorder()
        batcher = PriorityBatcher(run, max_batch_size=3)
        first = asyncio.ensure_future(batcher.submit(_req("bulk0")))
        await asyncio.sleep(0.01)  # bulk0 computes (held open); the rest queue behind it
        later = [_req(f"bulk{i}") for i in range(1, 5)] + [_req("mod0", 1), _req("mod1", 1), _req("urgent", 5)]
        tasks = [asyncio.ensure_future(batcher.submit(r)) for r in later]
        await asyncio.sleep(0.01)
        run.release.set()
        results = await asyncio.gather(first, *tasks)
        return run.batches, results

    batches, results = asyncio.run(scenario())
    assert batches == [["bulk0"], ["urgent"], ["mod0", "mod1"], ["bulk1", "bulk2", "bulk3"], ["bulk4"]]
    assert results == [f"scored {n}" for n in ["bulk0", "bulk1", "bulk2", "bulk3", "bulk4", "mod0", "mod1", "urgent"]]


def test_document_cap_splits_batches_and_a_big_request_still_runs_alone():
    async def scenario() -> list[list[str]]:
        run = Recorder()
        run.hold_first = False
        batcher = PriorityBatcher(run, max_batch_size=8, wait_s=0.01, max_batch_documents=10)
        reqs = [_req("a", docs=4), _req("b", docs=4), _req("c", docs=4), _req("huge", docs=50), _req("d", docs=1)]
        await asyncio.gather(*(batcher.submit(r) for r in reqs))
        return run.batches

    assert asyncio.run(scenario()) == [["a", "b"], ["c"], ["huge"], ["d"]]


def test_errors_reach_their_batch_only_and_gone_callers_are_skipped():
    async def scenario() -> tuple[list[object], list[list[str]]]:
        run = Recorder()
        run.fail_on = "bad"
        batcher = PriorityBatcher(run, max_batch_size=1)
        first = asyncio.ensure_future(batcher.submit(_req("first")))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.submit(_req("gone")))
        bad = asyncio.ensure_future(batcher.submit(_req("bad")))
        ok = asyncio.ensure_future(batcher.submit(_req("ok")))
        await asyncio.sleep(0.01)
        gone.cancel()  # its caller timed out while it waited: never computed
        run.release.set()
        results = await asyncio.gather(first, bad, ok, return_exceptions=True)
        return results, run.batches

    results, batches = asyncio.run(scenario())
    assert results[0] == "scored first" and isinstance(results[1], RuntimeError) and results[2] == "scored ok"
    assert ["gone"] not in batches


def test_a_feed_at_its_budget_keeps_its_own_threads_and_pauses_fetching():
    from kafka import TopicPartition

    from tests.test_worker_loop import TOPIC, Harness, job, until

    mod_topic = "rerank.jobs.moderation"
    with Harness(max_in_flight=2) as h:
        gate = h.client.gates["slow"] = threading.Event()
        for i in range(6):  # recommendation: blocked in the model, its budget (2) full
            h.consumer.add(TOPIC, job(f"rec{i}", query="slow"))
        for i in range(3):  # moderation, polled with them: own budget, own threads
            h.consumer.add(mod_topic, job(f"mod{i}", feed="moderation", long_documents="truncate"))
        until(lambda: len(h.results()) == 3)  # moderation answered while recommendation is stuck
        assert {r.job_id for r in h.results()} == {"mod0", "mod1", "mod2"}
        # Fetching pauses for every partition while a feed is at its budget (Worker._apply_backpressure).
        until(lambda: TopicPartition(TOPIC, 0) in h.consumer.paused())
        gate.set()
        until(lambda: len(h.results()) == 9)


@pytest.mark.parametrize("priority", [0, 1])
def test_the_worker_sends_its_feed_priority_to_the_replica(priority):
    from schemas.messages import Candidate, RerankJob
    from schemas.settings import Settings
    from serve_app.scoring import ScoringCore
    from tests.test_worker_loop import GatedClient
    from workers.processing import JobProcessor

    feeds = {"f": {"topic": "t", "instruction": "i", "priority": priority}}
    settings = Settings.model_validate({"kafka": {"feeds": feeds}, "redis": {"enabled": False}})
    client = GatedClient()
    seen: list[int] = []
    client.score = lambda r, _score=client.score: seen.append(r.priority) or _score(r)  # type: ignore[method-assign]
    processor = JobProcessor(settings, client, ScoringCore(None), "w")
    (item,) = processor.admit([RerankJob(job_id="j", feed="f", query="q", candidates=[Candidate(id="a", text="x")])])
    processor.finish(item)
    assert seen == [priority]
