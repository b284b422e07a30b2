"""What happens to one record between the consumer and the publisher, with no Kafka in sight.

``JobProcessor.admit`` decodes a poll's records and looks all their jobs up in the scoring core
in one round trip; ``finish`` scores one job's misses under the retry/deadline policy and builds
its ``RerankResult``. Every path ends in exactly one ``Outcome``: a result or a rejection
(dead letter). Only failures that are not the record's fault (the model side unreachable after
the retries) surface as ``scoring_failed`` dead letters; a shutdown leaves the record unfinished
(``None``) so the next owner retries it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

from schemas.messages import ErrorKind, ModelRef, RerankJob, RerankResult, now_ms
from schemas.scoring import ModelInfo, ScoreRequest
from schemas.settings import DEFAULT_MODEL, Settings
from serve_app.scoring import Lookup, ScoreClient, Scored, ScoringCore
from workers import metrics
from workers.decode import Rejection, deadline_passed, decode_job

log = logging.getLogger(__name__)

Outcome = Union[RerankResult, Rejection]


@dataclass
class Admitted:
    """A valid job with what the cache already knew; ``lookup.missed`` empty = ready to publish."""

    job: RerankJob
    lookup: Lookup
    picked_at_ms: int
    model: str = DEFAULT_MODEL  # key of the model that scores it (model.* or one of model.extra_models)


class JobProcessor:
    """Decoding, cache lookup, scoring with retries, ranking. Thread-safe (pool threads call finish)."""

    def __init__(
        self, settings: Settings, client: ScoreClient | Mapping[str, ScoreClient], core: ScoringCore, worker_id: str
    ):
        self.settings = settings
        # One client per served model key (a single client = the default model only, as before).
        self.clients = dict(client) if isinstance(client, Mapping) else {DEFAULT_MODEL: client}
        self.client = self.clients[DEFAULT_MODEL]
        self.core = core
        self.worker_id = worker_id
        self.models: dict[str, ModelInfo] = {key: c.info() for key, c in self.clients.items()}
        self.model_refs = {key: ModelRef(id=m.id, revision=m.revision, kind=m.kind) for key, m in self.models.items()}
        self.model: ModelInfo = self.models[DEFAULT_MODEL]
        self.model_ref = self.model_refs[DEFAULT_MODEL]

    def model_key(self, job: RerankJob) -> str:
        """The model a (decoded) job is scored with: the one it names, else its feed's default."""
        if job.model is None:
            return self.settings.feed_model(job.feed)
        return self.settings.model.resolve(job.model, self.model.id) or DEFAULT_MODEL

    def instruction_for(self, job: RerankJob) -> str:
        return job.instruction if job.instruction is not None else self.settings.kafka.feeds[job.feed].instruction

    def request_for(self, job: RerankJob) -> ScoreRequest:
        """The job as the scoring core sees it; instruction and long-document mode default per feed."""
        feed = self.settings.kafka.feeds[job.feed]
        return ScoreRequest(
            job.query,
            [c.text for c in job.candidates],
            self.instruction_for(job),
            truncation_direction=job.truncation_direction,
            max_tokens_per_doc=job.max_tokens_per_doc,
            long_documents=job.long_documents or feed.long_documents,
            priority=feed.priority,
        )

    def decode(self, value: bytes | None, topic: str) -> RerankJob | Rejection:
        return decode_job(value, topic, self.settings, self.model.id)

    def admit(self, jobs: Sequence[RerankJob]) -> list[Admitted]:
        """Look every job of a poll up in ONE cache round trip (and note job_id reuse, see below)."""
        picked = now_ms()
        self._note_job_id_reuse(jobs)
        requests = [self.request_for(j) for j in jobs]
        keys = [self.model_key(j) for j in jobs]
        found: dict[int, Lookup] = {}
        for key in dict.fromkeys(keys):  # one cache round trip per model (the fingerprint is in the key)
            idx = [i for i, k in enumerate(keys) if k == key]
            found.update(zip(idx, self.core.lookup_many(self.models[key], [requests[i] for i in idx])))
        return [Admitted(j, found[i], picked, keys[i]) for i, j in enumerate(jobs)]

    def _note_job_id_reuse(self, jobs: Sequence[RerankJob]) -> None:
        """The same job_id with different content is accepted (both are ranked and published under the
        key) but counted and logged: it is a producer bug that a compacted results topic would hide."""
        cache = self.core.cache
        if cache is None or not jobs:
            return
        digests = [
            hashlib.sha256(j.model_dump_json(exclude={"created_at"}).encode("utf-8", "surrogatepass")).hexdigest()[:32]
            for j in jobs
        ]
        conflicts = cache.remember_jobs([(j.job_id, d) for j, d in zip(jobs, digests)], self.settings.redis.ttl_s)
        for job, conflict in zip(jobs, conflicts):
            if conflict:
                metrics.JOB_ID_REUSED.labels(job.feed).inc()
                log.warning(
                    "job_id %r reused with different content (feed %s): both are ranked; fix the producer",
                    job.job_id[:100],
                    job.feed,
                )

    def finish(self, item: Admitted, stopping: threading.Event | None = None) -> Outcome | None:
        """Score what the cache missed (retrying with back-off), then rank. None = stopped, not done."""
        w = self.settings.worker
        delay = w.retry_backoff_s
        for attempt in range(w.scoring_retries + 1):
            if deadline_passed(item.job):
                return Rejection(ErrorKind.deadline_expired, "deadline passed before scoring", item.job.job_id)
            try:
                scored = self.core.complete(self.models[item.model], self.clients[item.model], item.lookup)
                return self.result(item, scored)
            except Exception as exc:  # noqa: BLE001 - the model side failed: retried, then dead-lettered
                if stopping is not None and stopping.is_set():
                    log.warning("job %s not scored before shutdown (%r); it will be redelivered", item.job.job_id, exc)
                    return None
                if attempt == w.scoring_retries:
                    reason = f"scoring failed after {attempt + 1} attempts: {exc!r}"[:2000]
                    return Rejection(ErrorKind.scoring_failed, reason, item.job.job_id)
                log.warning("scoring job %s failed (%r); retry in %.2fs", item.job.job_id, exc, delay)
                if stopping is None:
                    time.sleep(delay)
                else:
                    stopping.wait(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def result(self, item: Admitted, scored: Scored) -> RerankResult:
        """The job's result, validated once from plain data: pydantic-core checks a list of dicts faster than
        Python builds (or even ``model_construct``s) the RankedCandidate models one by one (13 vs 24-34 us
        for 20 candidates: a cached job's largest cost after decoding)."""
        job = item.job
        done = now_ms()
        return RerankResult.model_validate(
            {
                "job_id": job.job_id,
                "feed": job.feed,
                "model": self.model_refs[item.model],
                "ranked": ranked(job, scored, job.top_k),
                "flagged": flagged(job, scored),
                "cached": scored.cached,
                "timings": {
                    "queue_wait_ms": max(0.0, float(item.picked_at_ms - job.created_at)),
                    "cache_ms": scored.cache_ms,
                    "model_ms": scored.model_ms,
                    "total_ms": max(0.0, float(done - job.created_at)),
                },
                "worker_id": self.worker_id,
            }
        )


def ranked(job: RerankJob, scored: Scored, top_k: int | None) -> list[dict]:
    """Best first (ties in input order), as RankedCandidate fields; top_k None = every candidate. Chunk mode:
    with each best window."""
    order = scored.order if top_k is None else scored.order[:top_k]
    cands, scores = job.candidates, scored.scores
    chunks = scored.chunks or [None] * len(scores)  # None: no chunk key in the result (excluded when None)
    return [{"id": cands[i].id, "score": scores[i], "rank": n, "chunk": chunks[i]} for n, i in enumerate(order, 1)]


def flagged(job: RerankJob, scored: Scored) -> list[str]:
    """Ids scoring at or above the job's threshold, best first."""
    if job.threshold is None:
        return []
    return [job.candidates[i].id for i in scored.order if scored.scores[i] >= job.threshold]
