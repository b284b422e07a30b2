"""Reads the results and dead-letter topics of a run and keeps, per job, when its outcome arrived.

End-to-end latency = arrival here - the job's ``created_at`` (same machine clock), so it covers
produce, queueing, cache, model, publish and consume. Duplicates (at-least-once) are counted,
never double-counted as results. It reads with librdkafka (``load_tests/rdkafka.py``): cheap on the
cores it shares with the worker under test.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from schemas.messages import DeadLetter, RerankResult, now_ms
from schemas.settings import Settings


@dataclass
class Outcome:
    arrived_ms: int
    cached: int = 0
    dead_letter: str | None = None  # error kind


@dataclass
class Collector:
    settings: Settings
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    duplicates: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Collector:
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("collector could not attach to the output topics")
        return self

    def _run(self) -> None:
        from load_tests.rdkafka import poll_batch, read_from_start

        k = self.settings.kafka
        consumer = read_from_start(self.settings, [k.results_topic, k.dlq_topic])  # run-unique: all of it is ours
        self._ready.set()
        try:
            while not self._stop.is_set():
                batch = poll_batch(consumer, 0.1)
                arrived = now_ms()
                for rec in batch:
                    self._record(rec, arrived)
        finally:
            consumer.close()

    def _record(self, rec, arrived: int) -> None:
        if rec.topic == self.settings.kafka.dlq_topic:
            dl = DeadLetter.model_validate_json(rec.value)
            job_id, outcome = (
                dl.job_id or f"dlq@{rec.partition}:{rec.offset}",
                Outcome(arrived, dead_letter=str(dl.error_kind)),
            )
        else:
            res = RerankResult.model_validate_json(rec.value)
            job_id, outcome = res.job_id, Outcome(arrived, cached=res.cached)
        if job_id in self.outcomes:
            self.duplicates += 1
        else:
            self.outcomes[job_id] = outcome

    def wait_for(self, job_ids: set[str], timeout_s: float, progress=None) -> bool:
        """Until every job has an outcome (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = len(job_ids & self.outcomes.keys())
            if progress is not None:
                progress(done)
            if done == len(job_ids):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
