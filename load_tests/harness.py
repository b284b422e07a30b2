"""An isolated pipeline for load tests and benchmarks: Serve app (replicas in Ray), N workers in
threads of this process or (``worker_processes=True``) in Ray actors of their own, as in production,
so the load generator and collector here do not share their GIL; run-unique topics and cache prefix;
torn down on exit.

With ``external=True`` nothing is started: the configured topics are used and whatever
workers / Serve app already run there do the work.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from schemas.messages import RerankJob, now_ms
from schemas.settings import Settings


@dataclass
class LocalPipeline:
    settings: Settings
    workers: int = 1
    external: bool = False
    worker_processes: bool = False
    _started: Any = None
    _workers: list[Any] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _actors: list[Any] = field(default_factory=list)
    _producer: Any = None

    def __enter__(self) -> LocalPipeline:
        from workers.topics import ensure_topics

        ensure_topics(self.settings)
        if not self.external:
            from serve_app import runtime
            from serve_app.scoring.client import ServeScoreClient
            from workers.worker import Worker

            self._started = runtime.start(self.settings)
            if self.worker_processes:
                from workers.runner import start_worker_actors

                self._actors = start_worker_actors(self.settings, self.workers)
                return self
            for i in range(self.workers):
                client = ServeScoreClient(
                    runtime.get_score_handle(self.settings), self.settings.worker.scoring_timeout_s
                )
                w = Worker(self.settings, client, worker_id=f"load-{i}")
                t = threading.Thread(target=w.run, name=f"worker-{i}", daemon=True)
                t.start()
                self._workers.append(w)
                self._threads.append(t)
        return self

    def produce(self, job: RerankJob) -> RerankJob:
        """Send one job (created_at = now) without waiting for the broker's ack."""
        job = job.model_copy(update={"created_at": now_ms()})
        topic = self.settings.kafka.feeds[job.feed].topic
        self.producer.send(topic, job.model_dump_json().encode(), key=job.job_id.encode())
        return job

    def prepare(self, job: RerankJob) -> tuple[str, bytes, bytes, bytes]:
        """A job serialised ahead of time, so a burst measures the pipeline rather than the load generator's
        serialisation (which shares this process, and its GIL, with the workers); see ``send_prepared``."""
        value = job.model_copy(update={"created_at": 0}).model_dump_json().encode()
        if value.count(b'"created_at":0') != 1:  # e.g. metadata with such a key: stamp it the slow way
            raise ValueError(f"job {job.job_id!r} cannot be prepared; use produce()")
        head, tail = value.split(b'"created_at":0', 1)  # created_at is stamped at send time
        return self.settings.kafka.feeds[job.feed].topic, job.job_id.encode(), head, tail

    def send_prepared(self, prepared: tuple[str, bytes, bytes, bytes]) -> int:
        """Send a prepared job stamped created_at = now; returns that timestamp (ms)."""
        topic, key, head, tail = prepared
        created = now_ms()
        self.producer.send(topic, b'%s"created_at":%d%s' % (head, created, tail), key=key)
        return created

    @property
    def producer(self) -> Any:
        """The load generator's producer: librdkafka (``load_tests/rdkafka.py``), cheap on shared cores."""
        if self._producer is None:
            from load_tests.rdkafka import Producer

            self._producer = Producer(self.settings)
        return self._producer

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush()

    def cache_stats(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        stats = [w.cache.stats for w in self._workers]
        if self._actors:
            import ray

            stats += ray.get([a.cache_stats.remote() for a in self._actors])
        for st in stats:
            for k, v in st.items():
                totals[k] = totals.get(k, 0) + v
        return totals

    def __exit__(self, *exc) -> None:
        from workers.topics import delete_isolated

        if self._producer is not None:
            self._producer.close()
        if self._actors:
            import ray

            ray.get([a.stop.remote() for a in self._actors])
        for w in self._workers:
            w.stop()
        for t in self._threads:
            t.join(60)
        if self._started is not None:
            from serve_app import runtime

            runtime.stop(self._started)
        if not self.external:
            delete_isolated(self.settings)
        time.sleep(0)
