"""The Kafka worker loop: consume jobs, rank them, publish results / dead letters, commit.

Threading model (kafka-python's consumer is not thread-safe): ONE poll thread makes every
consumer call (poll, pause/resume, commit). Per poll it decodes all records, looks all jobs up
in the cache in one round trip, publishes fully cached jobs at once and hands jobs with misses
to a bounded thread pool. Producer acknowledgements mark offsets done; the poll thread commits
the contiguous done prefix every ``commit_interval_s``. Delivery is at-least-once; with
``kafka.exactly_once`` results and offsets commit in one Kafka transaction per commit interval
(the pool is drained first, so a transaction's results are exactly its offsets). See
docs/architecture.md "Delivery guarantee".
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas.messages import DeadLetter, ErrorKind, RerankJob, RerankResult, now_ms
from schemas.settings import Settings
from workers import metrics
from workers.cache import ScoreCache
from workers.decode import Rejection, deadline_passed, decode_job
from workers.offsets import OffsetTracker
from workers.processor import JobProcessor, Prepared, Scorer

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    def __init__(
        self,
        settings: Settings,
        scorer: Scorer,
        *,
        cache: ScoreCache | None = None,
        worker_id: str | None = None,
        group_id: str | None = None,
    ):
        self.settings = settings
        self.worker_id = worker_id or settings.worker.worker_id or default_worker_id()
        self.cache = cache if cache is not None else ScoreCache(settings.redis, log_interval_s=settings.worker.log_interval_s)
        self.processor = JobProcessor(settings, scorer, self.cache, self.worker_id)
        metrics.track_cache(self.cache)
        self.group_id = group_id or settings.kafka.group_id
        self.tracker = OffsetTracker()
        self.stop_event = threading.Event()
        self.fatal: BaseException | None = None
        self._pool = ThreadPoolExecutor(settings.worker.max_in_flight, thread_name_prefix="score")
        self._queued = 0  # jobs handed to the pool and not finished
        self._queued_lock = threading.Lock()
        self._paused = False
        self.counts = {"results": 0, "dead_letters": 0}
        self._consumer = None
        self._producer = None
        self._eos = settings.kafka.exactly_once
        self._closing = False
        self.assignment: frozenset = frozenset()  # partitions owned now (set by the rebalance listener)

    # -- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> int:
        """Consume until stop(); then finish in-flight jobs, commit, close. Returns an exit code."""
        from kafka import ConsumerRebalanceListener

        from workers.kafka_io import make_consumer, make_producer
        from workers.topics import ensure_topics

        ensure_topics(self.settings)
        if self._eos:
            # A stable worker id gives a stable transactional id: a restarted worker fences its
            # killed predecessor at once instead of waiting for its transaction to time out.
            self._producer = make_producer(
                self.settings, transactional_id=f"{self.group_id}.{self.worker_id}", transaction_timeout_ms=10_000
            )
            self._producer.init_transactions()  # fences a previous incarnation with the same id
            self._producer.begin_transaction()
        else:
            self._producer = make_producer(self.settings)
        self._consumer = make_consumer(self.settings, group_id=self.group_id)
        worker = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                worker._on_revoked(revoked)

            def on_partitions_assigned(self, assigned):
                worker.assignment = frozenset(assigned)
                log.info("%s assigned %s", worker.worker_id, sorted((tp.topic, tp.partition) for tp in assigned))

        self._await_partition_metadata()
        self._consumer.subscribe(self.settings.kafka.input_topics, listener=Listener())
        log.info("worker %s consuming %s (group %s)", self.worker_id, self.settings.kafka.input_topics, self.group_id)
        last_commit = time.monotonic()
        last_lag = 0.0
        try:
            while not self.stop_event.is_set() and self.fatal is None:
                self._apply_backpressure()
                batch = self._consumer.poll(timeout_ms=100, max_records=self.settings.worker.poll_max_records)
                records = [r for recs in batch.values() for r in recs]
                if records:
                    self._handle(records)
                now = time.monotonic()
                if now - last_commit >= self.settings.worker.commit_interval_s:
                    self._commit()
                    last_commit = now
                if now - last_lag >= 5:
                    self._report_lag()
                    last_lag = now
        finally:
            self._shutdown()
        if self.fatal is not None:
            log.error("worker stopped on error: %r", self.fatal)
            return 1
        return 0

    def _await_partition_metadata(self, timeout_s: float = 30.0) -> None:
        """Join the group only once the consumer knows every input topic's partitions.

        A member that joins before a freshly created topic's metadata arrives is assigned nothing
        and would wait for the next metadata refresh to rebalance.
        """
        deadline = time.monotonic() + timeout_s
        for topic in self.settings.kafka.input_topics:
            while not self._consumer.partitions_for_topic(topic) and time.monotonic() < deadline:
                time.sleep(0.1)

    def _shutdown(self) -> None:
        self._pool.shutdown(wait=True)  # in-flight jobs finish and are published
        try:
            if self._eos and self.fatal is not None:
                self._producer.abort_transaction()  # the restart redelivers everything uncommitted
            elif self._producer is not None:
                self._producer.flush(timeout=30)
            if self._consumer is not None:
                if self.fatal is None:
                    self._commit(final=True)
                self._closing = True  # close() revokes partitions: nothing left to commit then
                self._consumer.close(autocommit=False)
        finally:
            if self._producer is not None:
                self._producer.close(timeout=10)
            self.cache.close()
        log.info("worker %s stopped: %s, cache %s", self.worker_id, self.counts, self.cache.stats)

    # -- poll thread ------------------------------------------------------------------------------

    def _handle(self, records: list[Any]) -> None:
        jobs: list[tuple[Any, RerankJob]] = []
        served = self.processor.scorer.model.id
        for rec in records:
            tp = (rec.topic, rec.partition)
            self.tracker.start(tp, rec.offset)
            outcome = decode_job(rec.value, rec.topic, self.settings, served)
            feed = self.settings.kafka.feed_for_topic(rec.topic) or "unknown"
            metrics.CONSUMED.labels(feed).inc()
            if isinstance(outcome, Rejection):
                self._dead_letter(rec, outcome)
            else:
                jobs.append((rec, outcome))
        if not jobs:
            return
        prepared = self.processor.prepare([j for _, j in jobs])
        for (rec, _), prep in zip(jobs, prepared):
            hits = len(prep.cached) - len(prep.misses)
            metrics.CACHE_HITS.inc(hits)
            metrics.CACHE_MISSES.inc(len(prep.misses))
            if not prep.misses:
                self._publish_result(rec, self.processor.result(prep, from_cache=hits, model_ms=0.0))
            else:
                with self._queued_lock:
                    self._queued += 1
                metrics.IN_FLIGHT.inc()
                self._pool.submit(self._score_job, rec, prep, hits)

    def _apply_backpressure(self) -> None:
        with self._queued_lock:
            queued = self._queued
        limit = self.settings.worker.max_in_flight
        if not self._paused and queued >= limit:
            self._consumer.pause(*self._consumer.assignment())
            self._paused = True
        elif self._paused and queued <= limit // 2:
            self._consumer.resume(*self._consumer.paused())
            self._paused = False

    def _commit(self, final: bool = False, in_callback: bool = False) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        if self._eos:
            self._commit_transaction(reopen=not final)
            return
        positions = self._positions()
        if not positions:
            return
        offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in positions.items()}
        try:
            if in_callback:
                # kafka-python 3 runs rebalance listeners on its IO thread, where a blocking commit
                # is refused; the async commit is queued ahead of the re-join, with this generation.
                self._consumer.commit_async(offsets)
            else:
                self._consumer.commit(offsets)
            self.tracker.mark_committed(positions)
        except Exception as exc:  # noqa: BLE001 - e.g. rebalance in progress: retried next interval
            log.warning("offset commit failed (%r); will retry", exc)

    def _positions(self) -> dict:
        assigned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        return {k: v for k, v in self.tracker.to_commit().items() if k in assigned}

    def _commit_transaction(self, reopen: bool = True) -> None:
        """Exactly-once: drain the pool, then commit its results and their offsets atomically."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        while self._queued and self.fatal is None:
            time.sleep(0.002)
        if self.fatal is not None:
            return
        positions = self._positions()
        if positions:
            offsets = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in positions.items()}
            self._producer.send_offsets_to_transaction(offsets, self._consumer.group_metadata())
        self._producer.commit_transaction()
        self.tracker.mark_committed(positions)
        if reopen:
            self._producer.begin_transaction()

    def _on_revoked(self, revoked) -> None:
        """Before losing partitions: let their in-flight jobs finish briefly, commit what is done, forget."""
        keys = [(tp.topic, tp.partition) for tp in revoked]
        if self._closing:
            self.tracker.forget(keys)
            return
        # Bounded: this blocks the consumer's IO thread (and its heartbeats), so stay well below
        # the session timeout; whatever is still unfinished is redelivered to the next owner.
        deadline = time.monotonic() + 3
        while self.tracker.in_flight() and time.monotonic() < deadline:
            self._producer.flush(timeout=1)
            time.sleep(0.02)
        self._commit(in_callback=True)
        self.tracker.forget(keys)

    def _report_lag(self) -> None:
        try:
            for tp in self._consumer.assignment():
                high = self._consumer.highwater(tp)
                if high is not None:
                    metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - self._consumer.position(tp)))
        except Exception:  # noqa: BLE001 - metrics must not stop consuming
            pass

    # -- pool threads -----------------------------------------------------------------------------

    def _score_job(self, rec: Any, prep: Prepared, hits: int) -> None:
        try:
            w = self.settings.worker
            delay = w.retry_backoff_s
            for attempt in range(w.scoring_retries + 1):
                if deadline_passed(prep.job):
                    self._dead_letter(rec, Rejection(ErrorKind.deadline_expired, "deadline passed before scoring", prep.job.job_id))
                    return
                try:
                    model_ms = self.processor.score_misses(prep)
                    break
                except Exception as exc:  # noqa: BLE001 - any scoring failure is retried, then dead-lettered
                    if self.stop_event.is_set():
                        # Shutting down: leave the offset uncommitted so the next owner retries it.
                        log.warning("job %s not scored before shutdown (%r); it will be redelivered", prep.job.job_id, exc)
                        return
                    if attempt == w.scoring_retries:
                        self._dead_letter(
                            rec,
                            Rejection(ErrorKind.scoring_failed, f"scoring failed after {attempt + 1} attempts: {exc!r}"[:2000], prep.job.job_id),
                        )
                        return
                    log.warning("scoring job %s failed (%r); retry in %.2fs", prep.job.job_id, exc, delay)
                    time.sleep(delay)
                    delay *= 2
            self._publish_result(rec, self.processor.result(prep, from_cache=hits, model_ms=model_ms))
        except BaseException as exc:  # noqa: BLE001
            self.fatal = exc
        finally:
            with self._queued_lock:
                self._queued -= 1
            metrics.IN_FLIGHT.dec()

    # -- publishing (any thread; kafka-python's producer is thread-safe) -------------------------

    def _publish_result(self, rec: Any, result: RerankResult) -> None:
        self._send(rec, self.settings.kafka.results_topic, result.job_id, result.model_dump_json().encode())
        self.counts["results"] += 1
        metrics.PUBLISHED.labels(result.feed).inc()
        metrics.JOB_LATENCY.observe(result.timings.total_ms / 1000)

    def _dead_letter(self, rec: Any, why: Rejection) -> None:
        letter = DeadLetter(
            payload_b64=DeadLetter.encode_payload(rec.value),
            job_id=why.job_id,
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
            error_kind=why.kind,
            reason=why.reason,
            worker_id=self.worker_id,
            produced_at=now_ms(),
        )
        key = why.job_id or f"{rec.topic}/{rec.partition}/{rec.offset}"
        self._send(rec, self.settings.kafka.dlq_topic, key, letter.model_dump_json().encode())
        self.counts["dead_letters"] += 1
        feed = self.settings.kafka.feed_for_topic(rec.topic) or "unknown"
        metrics.DEAD_LETTERED.labels(feed, why.kind.value).inc()
        log.info("dead-lettered %s/%d@%d: %s: %s", rec.topic, rec.partition, rec.offset, why.kind.value, why.reason[:200])

    def _send(self, rec: Any, topic: str, key: str, value: bytes) -> None:
        tp, offset = (rec.topic, rec.partition), rec.offset
        future = self._producer.send(topic, value=value, key=key.encode("utf-8"))
        if self._eos:  # done once in the transaction: its commit makes result and offset visible together
            self.tracker.done(tp, offset)
        else:
            future.add_callback(lambda _md: self.tracker.done(tp, offset))
        future.add_errback(self._publish_failed)

    def _publish_failed(self, exc: BaseException) -> None:
        # The offset stays uncommitted; stopping makes a restart redeliver it (at-least-once).
        log.error("publish failed after producer retries: %r; stopping", exc)
        self.fatal = exc
