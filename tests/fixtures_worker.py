"""Fixtures of the worker tests: an isolated pipeline (own topics, group, cache prefix) on the
real local Kafka + Redis, wired to the shared tiny-model Serve app, and worker SUBPROCESSES
(``rerank-stream worker``) that tests can SIGTERM / SIGKILL like an operator would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from schemas.messages import Candidate, DeadLetter, RerankJob, RerankResult
from schemas.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
WORDS = "river mountain city bicycle coffee garden music winter ocean forest book train lamp cheese violin".split()


def make_jobs(prefix: str, n: int, docs: int = 20, feed: str = "recommendation", **kw: Any) -> list[RerankJob]:
    """Deterministic jobs whose texts depend on the index only (so a replay hits the cache)."""
    jobs = []
    for i in range(n):
        cands = [
            Candidate(id=f"d{k}", text=f"{WORDS[(i + k) % len(WORDS)]} {WORDS[(i * 3 + k * 7) % len(WORDS)]} item {k}")
            for k in range(docs)
        ]
        jobs.append(
            RerankJob(
                job_id=f"{prefix}-{i}",
                feed=feed,
                query=f"looking for {WORDS[i % len(WORDS)]} number {i}",
                candidates=cands,
                **kw,
            )
        )
    return jobs


class WorkerProcess:
    """``rerank-stream worker`` in a subprocess; stderr is collected for assertions."""

    def __init__(self, env: dict[str, str], name: str, args: list[str] | None = None):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--log-level", "INFO", *(args or [])],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line)
            if " ready" in line:
                self._ready.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"worker {self.name} did not start (rc={self.proc.poll()}):\n{self.output[-4000:]}"
                )

    def wait_assigned(self, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [m for m in re.findall(r"assigned \[(.*)\]", self.output) if m]
            if got:
                return got
            time.sleep(0.1)
        raise AssertionError(f"worker {self.name} got no partitions:\n{self.output[-3000:]}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Pipeline:
    settings: Settings
    env: dict[str, str]
    worker_args: list[str] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    results: dict[str, list[RerankResult]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: list[DeadLetter] = field(default_factory=list)
    _reader: Any = None
    _producer: Any = None

    def start_worker(self, **env: str) -> WorkerProcess:
        w = WorkerProcess({**self.env, **env}, f"w{len(self.workers)}", self.worker_args)
        self.workers.append(w)
        return w

    def produce(self, jobs: list[RerankJob]) -> dict[str, tuple[str, int, int]]:
        """Send jobs to their feed topics; returns job_id -> (topic, partition, offset)."""
        futures = [
            (j.job_id, self.send_raw(self.settings.kafka.feeds[j.feed].topic, j.model_dump_json().encode(), j.job_id))
            for j in jobs
        ]
        self._producer.flush()
        out = {}
        for job_id, fut in futures:
            md = fut.get(timeout=30)
            out[job_id] = (md.topic, md.partition, md.offset)
        return out

    def send_raw(self, topic: str, value: bytes | None, key: str | None = None):
        from workers.kafka_io import make_producer

        if self._producer is None:
            self._producer = make_producer(self.settings)
        return self._producer.send(topic, value=value, key=None if key is None else key.encode())

    def poll(self, seconds: float = 0.2) -> None:
        from kafka import TopicPartition

        from workers.kafka_io import make_consumer

        if self._reader is None:
            self._reader = make_consumer(self.settings, group_id=None, enable_auto_commit=False)
            tps = [
                TopicPartition(t, p)
                for t in (self.settings.kafka.results_topic, self.settings.kafka.dlq_topic)
                for p in range(self.settings.kafka.topic_partitions)
            ]
            self._reader.assign(tps)
            self._reader.seek_to_beginning(*tps)
        for recs in self._reader.poll(timeout_ms=int(seconds * 1000)).values():
            for rec in recs:
                if rec.topic == self.settings.kafka.dlq_topic:
                    self.dead_letters.append(DeadLetter.model_validate_json(rec.value))
                else:
                    res = RerankResult.model_validate_json(rec.value)
                    self.results[res.job_id].append(res)

    def wait_for(self, job_ids, timeout: float = 60, dlq: int = 0) -> None:
        wanted = set(job_ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if wanted <= self.results.keys() and len(self.dead_letters) >= dlq:
                return
            for w in self.workers:
                if w.proc.poll() not in (None, 0, -9, -15):
                    raise AssertionError(f"worker {w.name} exited {w.proc.poll()}:\n{w.output[-4000:]}")
        missing = sorted(wanted - self.results.keys())
        logs = "\n".join(w.output[-2000:] for w in self.workers)
        raise AssertionError(
            f"{len(missing)} jobs without result after {timeout}s (e.g. {missing[:5]}); "
            f"{len(self.dead_letters)} dead letters\n{logs}"
        )

    def wait_count(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.results) < n and time.monotonic() < deadline:
            self.poll(0.05)
        logs = "\n".join(w.output[-3000:] for w in self.workers)
        assert len(self.results) >= n, f"only {len(self.results)} results after {timeout}s\n{logs}"

    def committed(self) -> dict[tuple[str, int], int]:
        from workers.kafka_io import make_admin

        admin = make_admin(self.settings)
        try:
            got = admin.list_group_offsets(self.settings.kafka.group_id)[self.settings.kafka.group_id]
        finally:
            admin.close()
        return {(tp.topic, tp.partition): om.offset for tp, om in got.items() if om.offset >= 0}

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        if self._reader is not None:
            self._reader.close()
        if self._producer is not None:
            self._producer.close()


def pipeline_env(name: str, serve: Any, redis_url: str, **extra: str) -> dict[str, str]:
    feeds = {
        "recommendation": {
            "topic": f"{name}.rec",
            "instruction": "Given a user's interest, retrieve items the user likes",
        },
        "moderation": {"topic": f"{name}.mod", "instruction": "Judge whether the text violates the policy"},
    }
    env = dict(os.environ)
    env.update(serve.worker_env)
    env.update(
        {
            "RERANK_KAFKA_FEEDS": json.dumps(feeds),
            "RERANK_KAFKA_RESULTS_TOPIC": f"{name}.res",
            "RERANK_KAFKA_DLQ_TOPIC": f"{name}.dlq",
            "RERANK_KAFKA_GROUP_ID": f"{name}.g",
            "RERANK_KAFKA_TOPIC_PARTITIONS": "2",
            "RERANK_KAFKA_AUTO_CREATE_TOPICS": "false",
            "REDIS_URL": redis_url,
            "RERANK_REDIS_KEY_PREFIX": f"{name}:",
            "RERANK_WORKER_COMMIT_INTERVAL_S": "0.2",
            "RERANK_WORKER_RETRY_BACKOFF_S": "0.05",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@pytest.fixture
def make_pipeline(kafka_admin, redis_url: str, worker_serve, unique_name: str):
    """Factory: an isolated pipeline whose topics are created (and deleted) by the test."""
    from kafka.admin import NewTopic

    made: list[Pipeline] = []

    def make(suffix: str = "", redis: str | None = None, **extra: str) -> Pipeline:
        name = f"{unique_name}{suffix}"
        env = pipeline_env(name, worker_serve, redis or redis_url, **extra)
        settings = load_settings(environ=env)
        from workers.topics import required_topics

        kafka_admin.create_topics([NewTopic(t, 2, 1) for t in required_topics(settings)])
        p = Pipeline(settings, env, list(worker_serve.worker_args))
        made.append(p)
        return p

    yield make
    import redis as redis_lib

    for p in made:
        p.close()
        try:  # drop the test's cache keys (the shared Redis outlives the session)
            r = redis_lib.Redis.from_url(p.settings.redis.url, socket_timeout=2)
            keys = list(r.scan_iter(match=p.settings.redis.key_prefix + "*", count=1000))
            if keys:
                r.delete(*keys)
        except redis_lib.RedisError:
            pass  # e.g. the throwaway Redis of the outage test is gone


@dataclass
class WorkerServe:
    """How worker subprocesses reach the model: env vars (+ extra CLI args), and the same model in-process."""

    worker_env: dict[str, str]
    model_path: str
    worker_args: list[str] = field(default_factory=list)
    _engine: Any = None

    def direct_engine(self):
        if self._engine is None:
            from schemas.settings import ModelSettings
            from serve_app.engine import load_engine

            self._engine = load_engine(ModelSettings(model=self.model_path, device="cpu", dtype="float32"))
        return self._engine


@pytest.fixture(scope="session")
def worker_serve(serve_stack, tiny_qwen_dir) -> WorkerServe:
    """Worker subprocesses join the test process's Ray cluster and score on the shared test app."""
    import ray

    s = serve_stack.settings
    env = {
        "RERANK_SERVE_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "RERANK_SERVE_APP_NAME": s.serve.app_name,
        "RERANK_SERVE_DEPLOYMENT_NAME": s.serve.deployment_name,
        "RERANK_MODEL": str(tiny_qwen_dir),
        "RERANK_MODEL_DEVICE": "cpu",
        "RERANK_MODEL_DTYPE": "float32",
    }
    return WorkerServe(env, str(tiny_qwen_dir))
