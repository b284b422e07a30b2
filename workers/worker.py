"""The Kafka worker loop: poll -> decode and look up -> score on a pool -> publish -> commit.

Wiring only: the consumer and producer wrappers (consumer.py, producer.py) come from injected
factories, offsets and transactions belong to the checkpoint (checkpoint.py), decoding, the
scoring core, retries and result building to the processor (processing.py). One poll thread
makes every consumer call; pool threads score and publish. Every consumed record ends as exactly
one result or one dead letter (docs/architecture.md "Delivery guarantee").
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from schemas.messages import RerankResult
from schemas.settings import DEFAULT_MODEL, Settings
from serve_app import tracing
from serve_app.scoring import ScoreCache, ScoreClient, ScoringCore
from workers import metrics
from workers.checkpoint import AtLeastOnceCheckpoint, Checkpoint, TransactionalCheckpoint
from workers.consumer import TP, JobConsumer, Record
from workers.dead_letters import build_dead_letter
from workers.decode import Rejection, internal_error
from workers.headers import JobTrace, redrive_mark
from workers.kafka_io import REBALANCE_TIMEOUT_MS
from workers.processing import Admitted, JobProcessor, Outcome
from workers.producer import Publisher

log = logging.getLogger(__name__)

ConsumerFactory = Callable[[], Any]
ProducerFactory = Callable[[str | None], Any]  # transactional id (None = plain idempotent producer)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def instance_id_for(worker_id: str) -> str:
    """A stable worker id as a Kafka ``group.instance.id`` (ASCII letters, digits, '.', '_', '-'; <= 249)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", worker_id)[:249].strip(".") or "worker"


class Worker:
    def __init__(
        self,
        settings: Settings,
        client: ScoreClient | Mapping[str, ScoreClient],
        *,
        cache: ScoreCache | None = None,
        worker_id: str | None = None,
        group_id: str | None = None,
        consumer_factory: ConsumerFactory | None = None,
        producer_factory: ProducerFactory | None = None,
        prepare_topics: Callable[[], object] | None = None,
        instance_id: str | None = None,
    ):
        self.settings = settings
        tracing.configure(settings.tracing, "worker")  # OTLP export when an endpoint is configured
        self.worker_id = worker_id or settings.worker.worker_id or default_worker_id()
        self.group_id = group_id or settings.kafka.group_id
        # Static membership needs an id that survives a restart: the caller's (a consumer replica's
        # slot) or worker.worker_id when it names this worker; host:pid is not stable -> dynamic member.
        if instance_id is None and worker_id is None and settings.worker.worker_id:
            instance_id = settings.worker.worker_id
        self.instance_id = instance_id_for(instance_id) if instance_id and settings.kafka.static_membership else None
        self.cache = (
            cache if cache is not None else ScoreCache(settings.redis, log_interval_s=settings.worker.log_interval_s)
        )
        metrics.track_cache(self.cache)
        clients = client if isinstance(client, Mapping) else {DEFAULT_MODEL: client}  # model key -> client
        self.processor = JobProcessor(
            settings,
            {key: tracing.TracedScoreClient(c) for key, c in clients.items()},
            ScoringCore(self.cache, settings.worker.chunk_documents),
            self.worker_id,
        )
        self._consumer_factory = consumer_factory or self._kafka_consumer
        self._producer_factory = producer_factory or self._kafka_producer
        self._prepare_topics = prepare_topics or self._ensure_topics
        self.stop_event = threading.Event()
        self.leave_group = False
        self.fatal: BaseException | None = None
        self.assignment: frozenset[TP] = frozenset()
        self.counts = {"consumed": 0, "results": 0, "dead_letters": 0}
        self.lag: dict[TP, int] = {}
        self._counts_lock = threading.Lock()
        # Each feed its own in-flight budget and threads: a burst on one feed never takes another's slots.
        self._budgets = {
            name: f.max_in_flight or settings.worker.max_in_flight for name, f in settings.kafka.feeds.items()
        }
        self._pools = {
            name: ThreadPoolExecutor(n, thread_name_prefix=f"score-{name}") for name, n in self._budgets.items()
        }
        self._feed_in_flight: Counter[str] = Counter()  # per feed, under _queued_lock
        self._queued = 0  # jobs handed to the pools and not finished
        self._queued_lock = threading.Lock()
        self.consumer: JobConsumer | None = None
        self.publisher: Publisher | None = None
        self.checkpoint: Checkpoint | None = None

    def stop(self, leave_group: bool = False) -> None:
        """Finish in-flight jobs, commit, close. ``leave_group``: this member goes for good (scale-down),
        so a static member is removed from the group at once instead of after the session timeout."""
        self.leave_group = self.leave_group or leave_group
        self.stop_event.set()

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> int:
        """Consume until stop(); then finish in-flight jobs, commit, close. Returns an exit code."""
        if self.consumer is None:
            self.open()
        assert self.consumer is not None and self.checkpoint is not None
        w = self.settings.worker
        last_commit = last_lag = time.monotonic()
        progress = Progress(self, w.log_interval_s)
        rebalance = RebalanceWatch((self.settings.kafka.session_timeout_ms + REBALANCE_TIMEOUT_MS) / 1000)
        try:
            while not self.stop_event.is_set() and self.fatal is None:
                # kafka-python refuses commits while the member rebalances: skip them then (no warning storm),
                # and end a member stuck in a rebalance (RebalanceWatch).
                rebalancing = rebalance.check(self.consumer.rebalancing(), self)
                self._apply_backpressure()
                records = self.consumer.poll(timeout_ms=100, max_records=w.poll_max_records)
                if records:
                    self._handle(records)
                now = time.monotonic()
                if now - last_commit >= w.commit_interval_s and not rebalancing:
                    self.checkpoint.commit()
                    last_commit = now
                if now - last_lag >= 5:
                    self._report_lag()
                    last_lag = now
                progress.maybe_log(now)
        finally:
            self._close()
        if self.fatal is not None:
            log.error("worker stopped on error: %r", self.fatal)
            return 1
        return 0

    def _handle(self, records: list[Record]) -> None:
        """Decode a poll's records, look all jobs up at once, publish what is ready, queue the rest."""
        assert self.checkpoint is not None
        jobs, traces = [], []
        for rec in records:
            self.checkpoint.started(rec.tp, rec.offset)
            self._count("consumed")
            metrics.CONSUMED.labels(self._feed(rec.topic)).inc()
            trace = JobTrace(rec.topic, rec.partition, rec.offset, rec.headers)
            with trace.step("rerank.decode"):
                outcome = self._guarded(rec, partial(self.processor.decode, rec.value, rec.topic))
            if isinstance(outcome, Rejection):
                self._publish(rec, outcome, trace)
            else:
                jobs.append((rec, outcome))
                traces.append(trace)
        if not jobs:
            return
        started_ns = time.time_ns()
        try:
            admitted = self.processor.admit([job for _, job in jobs])
        except Exception as exc:
            log.exception("cache lookup of %d jobs failed", len(jobs))
            for (rec, _), trace in zip(jobs, traces):
                self._publish(rec, internal_error(exc), trace)
            return
        ended_ns = time.time_ns()
        for (rec, _), item, trace in zip(jobs, admitted, traces):
            trace.record("rerank.cache_lookup", started_ns, ended_ns, hits=item.lookup.hits, jobs=len(jobs))
            metrics.CACHE_HITS.inc(item.lookup.hits)
            metrics.CACHE_MISSES.inc(len(item.lookup.missed))
            if not item.lookup.missed:
                self._publish(rec, self._guarded(rec, partial(self.processor.finish, item)), trace)
                continue
            with self._queued_lock:
                self._queued += 1
                self._feed_in_flight[item.job.feed] += 1
            metrics.IN_FLIGHT.inc()
            self._pools[item.job.feed].submit(self._score, rec, item, trace)

    def _score(self, rec: Record, item: Admitted, trace: JobTrace) -> None:
        """Pool thread: score one job's misses, publish its outcome (None = stopping: redelivered)."""
        try:
            with trace.activated():  # the scoring core's spans (rerank.score) join the job's trace
                outcome = self._guarded(rec, partial(self.processor.finish, item, self.stop_event))
            if outcome is not None:
                self._publish(rec, outcome, trace)
            else:
                trace.end()
        except BaseException as exc:  # noqa: BLE001 - publishing itself failed: not the record's fault
            self.fatal = exc
        finally:
            with self._queued_lock:
                self._queued -= 1
                self._feed_in_flight[item.job.feed] -= 1
            metrics.IN_FLIGHT.dec()

    @staticmethod
    def _guarded(rec: Record, step: Callable[[], Any]) -> Any:
        """Last resort per record: an unexpected exception becomes this record's dead letter."""
        try:
            return step()
        except Exception as exc:
            log.exception("unexpected error on %s/%d@%d", rec.topic, rec.partition, rec.offset)
            return internal_error(exc)

    # -- publishing (any thread) ------------------------------------------------------------------

    def _publish(self, rec: Record, outcome: Outcome, trace: JobTrace) -> None:
        """Result or dead letter, carrying the record's headers and the trace context of its publish span."""
        assert self.publisher is not None and self.checkpoint is not None
        k = self.settings.kafka
        topic = k.results_topic if isinstance(outcome, RerankResult) else k.dlq_topic
        span, headers = trace.publish(topic)
        trace.end()
        committed = self.checkpoint.on_publish(rec.tp, rec.offset)

        def on_ack() -> None:
            span.end()
            if committed is not None:
                committed()

        feed = self._feed(rec.topic)
        if isinstance(outcome, RerankResult):
            self.publisher.send(topic, outcome.job_id, outcome.model_dump_json().encode(), on_ack, headers)
            self._count("results")
            metrics.PUBLISHED.labels(outcome.feed).inc()
            metrics.JOB_LATENCY.observe(outcome.timings.total_ms / 1000)
            return
        key = outcome.job_id or f"{rec.topic}/{rec.partition}/{rec.offset}"
        mark = redrive_mark(rec.headers)
        value = build_dead_letter(
            rec.value,
            outcome,
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
            worker_id=self.worker_id,
            max_bytes=self.settings.limits.max_dead_letter_bytes,
            redrive_count=mark.count,
            redrive_from=mark.source,
        )
        self.publisher.send(topic, key, value, on_ack, headers)
        self._count("dead_letters")
        metrics.DEAD_LETTERED.labels(feed, outcome.kind.value).inc()
        log.info(
            "dead-lettered %s/%d@%d: %s: %s",
            rec.topic,
            rec.partition,
            rec.offset,
            outcome.kind.value,
            outcome.reason[:200],
        )

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self.counts[what] += 1

    def _failed(self, exc: BaseException) -> None:
        self.fatal = exc  # stop: the unacknowledged offset stays uncommitted and is redelivered

    # -- set-up, back-pressure, tear-down ----------------------------------------------------------

    def open(self) -> None:
        """Clients, checkpoint, subscription: everything before the first poll (fails loudly)."""
        self._prepare_topics()
        eos = self.settings.kafka.exactly_once
        # A stable worker id gives a stable transactional id: a restarted worker fences its killed
        # predecessor at once instead of waiting for its transaction to time out.
        self.publisher = Publisher(
            self._producer_factory(f"{self.group_id}.{self.worker_id}" if eos else None), self._failed
        )
        self.consumer = JobConsumer(self._consumer_factory())
        if eos:
            self.checkpoint = TransactionalCheckpoint(self.consumer, self.publisher, self._drain)
        else:
            self.checkpoint = AtLeastOnceCheckpoint(self.consumer, self.publisher)
        self.checkpoint.open()
        topics = self.settings.kafka.input_topics
        self.consumer.wait_for_metadata(topics)
        self.consumer.subscribe(topics, self._on_assigned, self._on_revoked, self._on_lost)
        member = f"static member {self.instance_id}" if self.instance_id else "dynamic member"
        log.info("worker %s consuming %s (group %s, %s)", self.worker_id, topics, self.group_id, member)

    def _on_assigned(self, partitions: set[TP]) -> None:
        assert self.consumer is not None
        self.assignment = frozenset(self.consumer.assignment())  # cooperative: ``partitions`` = only the new ones
        log.info("%s assigned %s (owns %d)", self.worker_id, sorted(partitions), len(self.assignment))

    def _on_revoked(self, partitions: set[TP]) -> None:
        assert self.checkpoint is not None and self.consumer is not None
        self.checkpoint.on_revoked(partitions)
        self.assignment = frozenset(self.consumer.assignment()) - partitions
        log.info("%s revoked %s (owns %d)", self.worker_id, sorted(partitions), len(self.assignment))

    def _on_lost(self, partitions: set[TP]) -> None:
        assert self.checkpoint is not None
        log.warning(
            "%s lost %s (evicted from the group: session expired or fenced); the next owner redelivers their"
            " unfinished jobs",
            self.worker_id,
            sorted(partitions),
        )
        self.checkpoint.on_lost(partitions)
        self.assignment = frozenset()

    def _apply_backpressure(self) -> None:
        """Per feed: its partitions pause at its in-flight budget and resume at or below half of it, so a burst
        on one feed neither takes another feed's slots nor holds its records back in Kafka. (Pausing only some
        partitions used to stall one for good, in exactly-once mode first: kafka-python's parked-records bug,
        fixed in ``kafka_python_fixes``.)"""
        assert self.consumer is not None
        with self._queued_lock:
            in_flight = dict(self._feed_in_flight)
        for feed, budget in self._budgets.items():
            topic = {self.settings.kafka.feeds[feed].topic}
            if in_flight.get(feed, 0) >= budget:
                self.consumer.pause_topics(topic)
            elif in_flight.get(feed, 0) <= budget // 2:
                self.consumer.resume_topics(topic)

    def _drain(self) -> bool:
        """Wait until no job is in flight (transactional commits); False when the worker failed."""
        while self._queued and self.fatal is None:
            time.sleep(0.002)
        return self.fatal is None

    def _close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)  # in-flight jobs finish and are published
        try:
            if self.checkpoint is not None:
                self.checkpoint.close(ok=self.fatal is None)
            member_id = None
            if self.consumer is not None:
                member_id = getattr(self.consumer.group_metadata(), "member_id", None)  # close() forgets it
                self.consumer.close()
            if self.leave_group and self.instance_id and self.consumer is not None:
                self._leave_group(member_id)
        finally:
            if self.publisher is not None:
                self.publisher.close(timeout=10)
            self.cache.close()
        tracing.flush()
        log.info("worker %s stopped: %s, cache %s", self.worker_id, self.counts, self.cache.stats)

    def _leave_group(self, member_id: str | None) -> None:
        from workers.kafka_io import leave_group

        try:
            leave_group(self.settings, self.group_id, self.instance_id or "", member_id)
            log.info("%s left group %s (static member %s removed)", self.worker_id, self.group_id, self.instance_id)
        except Exception as exc:  # noqa: BLE001 - the session timeout removes it anyway
            log.warning("could not remove static member %s from %s: %r", self.instance_id, self.group_id, exc)

    def _report_lag(self) -> None:
        assert self.consumer is not None
        try:
            self.lag = self.consumer.lag()
            for (topic, partition), lag in self.lag.items():
                metrics.LAG.labels(topic, str(partition)).set(lag)
        except Exception:  # noqa: BLE001 - metrics must not stop consuming
            pass

    @property
    def in_flight(self) -> int:
        with self._queued_lock:
            return self._queued

    def _feed(self, topic: str) -> str:
        return self.settings.kafka.feed_for_topic(topic) or "unknown"

    # -- default clients ---------------------------------------------------------------------------

    def _kafka_consumer(self) -> Any:
        from workers.kafka_io import make_consumer

        return make_consumer(self.settings, group_id=self.group_id, group_instance_id=self.instance_id)

    def _kafka_producer(self, transactional_id: str | None) -> Any:
        from workers.kafka_io import make_producer

        if transactional_id is None:
            return make_producer(self.settings)
        # Kafka's default 60 s. A transaction lasts from its first result to the commit after the in-flight jobs
        # drain; 10 s was exceeded by ordinary slow scoring on a loaded machine: the coordinator aborted it
        # (results never visible to read_committed readers) and fenced the worker (a CI failure). A killed worker's
        # open transaction holds read_committed readers back at most this long; a restart with the same worker id
        # fences it at once.
        return make_producer(self.settings, transactional_id=transactional_id, transaction_timeout_ms=60_000)

    def _ensure_topics(self) -> None:
        from workers.topics import ensure_topics

        ensure_topics(self.settings)


class RebalanceWatch:
    """A member stuck in a rebalance longer than a session timeout plus the rebalance timeout has lost
    its partitions without being told (kafka-python 3.0.12's abandoned join did this until
    ``kafka_python_fixes``; kept as the last resort). Ending the loop (exit 1; a consumer replica fails
    its health check) gets a fresh member instead of an idle one holding nothing."""

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self.since: float | None = None

    def check(self, rebalancing: bool, worker: Worker) -> bool:
        now = time.monotonic()
        if not rebalancing:
            self.since = None
        elif self.since is None:
            self.since = now
        elif now - self.since > self.limit_s and worker.fatal is None:
            worker.fatal = RuntimeError(f"stuck in a group rebalance for {now - self.since:.0f} s")
        return rebalancing


class Progress:
    """One INFO line every ``interval_s``: rates since the last line, cache hit ratio, lag, in flight."""

    def __init__(self, worker: Worker, interval_s: float):
        self.worker, self.interval_s = worker, interval_s
        self.last_at = time.monotonic()
        self.last_counts = dict(worker.counts)
        self.last_cache = dict(worker.cache.stats)

    def maybe_log(self, now: float) -> None:
        elapsed = now - self.last_at
        if elapsed < self.interval_s:
            return
        w = self.worker
        counts, cache = dict(w.counts), dict(w.cache.stats)
        rate = {k: (counts[k] - self.last_counts.get(k, 0)) / elapsed for k in counts}
        hits, misses = cache["hits"] - self.last_cache["hits"], cache["misses"] - self.last_cache["misses"]
        ratio = f"{hits / (hits + misses):.0%}" if hits + misses else "n/a"
        log.info(
            "progress %s: %.1f consumed/s, %.1f published/s, %.1f dead-lettered/s, cache hit %s, lag %d, in flight %d",
            w.worker_id,
            rate["consumed"],
            rate["results"],
            rate["dead_letters"],
            ratio,
            sum(w.lag.values()),
            w.in_flight,
        )
        self.last_at, self.last_counts, self.last_cache = now, counts, cache
