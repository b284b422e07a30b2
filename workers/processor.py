"""One job's path from validated input to ranked result: cache lookup, score misses, fill, rank.

Scoring goes through a small ``Scorer`` protocol so the same code runs against the Ray Serve
handle (production, integration tests) and an in-process engine (unit tests, benchmarks).
Kafka-free: the worker loop owns consuming, publishing and committing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.messages import ModelRef, RankedCandidate, RerankJob, RerankResult, Timings, now_ms
from schemas.ranking import best_first
from schemas.settings import Settings
from workers.cache import CacheQuery, ScoreCache


class Scorer(Protocol):
    """Scores documents against a query with one model. ``model``/``fingerprint`` name that model."""

    model: ModelRef
    fingerprint: str

    def score(self, query: str, documents: Sequence[str], instruction: str) -> list[float]: ...


def _field(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _scores_of(result: Any) -> list[float]:
    scores = _field(result, "scores", result)
    return [float(s) for s in scores]


def _model_ref(info: Any) -> tuple[ModelRef, str]:
    ref = ModelRef(id=str(_field(info, "id")), revision=_field(info, "revision"), kind=str(_field(info, "kind")))
    fingerprint = str(_field(info, "fingerprint") or f"{ref.id}@{ref.revision}")
    return ref, fingerprint


class EngineScorer:
    """In-process engine (serve_app.engine): unit tests and benchmarks."""

    def __init__(self, engine: Any):
        self._engine = engine
        self.model, self.fingerprint = _model_ref(engine.info)
        self.calls = 0

    def score(self, query: str, documents: Sequence[str], instruction: str) -> list[float]:
        self.calls += 1
        return _scores_of(self._engine.score(query, list(documents), instruction=instruction))


class ServeScorer:
    """The Ray Serve deployment handle (``serve_app.runtime.get_score_handle``)."""

    def __init__(self, handle: Any, timeout_s: float):
        from serve_app.engine import ScoreRequest

        self._handle = handle
        self._request = ScoreRequest
        self._timeout_s = timeout_s
        self.model, self.fingerprint = _model_ref(handle.info.remote().result(timeout_s=max(timeout_s, 60.0)))

    def score(self, query: str, documents: Sequence[str], instruction: str) -> list[float]:
        req = self._request(query=query, documents=list(documents), instruction=instruction)
        return _scores_of(self._handle.score.remote(req).result(timeout_s=self._timeout_s))


@dataclass
class Prepared:
    """A validated job with its resolved instruction and whatever the cache already knew."""

    job: RerankJob
    instruction: str
    cached: list[float | None]
    picked_at_ms: int
    cache_ms: float

    @property
    def misses(self) -> list[int]:
        return [i for i, s in enumerate(self.cached) if s is None]


class JobProcessor:
    def __init__(self, settings: Settings, scorer: Scorer, cache: ScoreCache | None, worker_id: str):
        self.settings = settings
        self.scorer = scorer
        self.cache = cache
        self.worker_id = worker_id

    def instruction_for(self, job: RerankJob) -> str:
        return job.instruction or self.settings.kafka.feeds[job.feed].instruction

    def prepare(self, jobs: Sequence[RerankJob]) -> list[Prepared]:
        """Resolve instructions and look every job of a poll up in ONE cache round trip."""
        picked = now_ms()
        t0 = time.perf_counter()
        instructions = [self.instruction_for(j) for j in jobs]
        if self.cache is not None and jobs:
            found = self.cache.lookup_many(
                [
                    CacheQuery(self.scorer.fingerprint, self.scorer.model.kind, ins, j.query, [c.text for c in j.candidates])
                    for j, ins in zip(jobs, instructions)
                ]
            )
        else:
            found = [[None] * len(j.candidates) for j in jobs]
        per_job_ms = (time.perf_counter() - t0) * 1000 / max(1, len(jobs))
        return [Prepared(j, ins, f, picked, per_job_ms) for j, ins, f in zip(jobs, instructions, found)]

    def score_misses(self, prep: Prepared) -> float:
        """Score the cache misses (chunked), fill the cache; returns model milliseconds."""
        misses = prep.misses
        if not misses:
            return 0.0
        job = prep.job
        docs = [job.candidates[i].text for i in misses]
        chunk = self.settings.worker.chunk_documents
        t0 = time.perf_counter()
        scores: list[float] = []
        for start in range(0, len(docs), chunk):
            part = docs[start : start + chunk]
            got = self.scorer.score(job.query, part, prep.instruction)
            if len(got) != len(part):
                raise RuntimeError(f"scorer returned {len(got)} scores for {len(part)} documents")
            scores.extend(got)
        model_ms = (time.perf_counter() - t0) * 1000
        for i, s in zip(misses, scores):
            prep.cached[i] = s
        if self.cache is not None:
            t1 = time.perf_counter()
            self.cache.store(self.scorer.fingerprint, self.scorer.model.kind, prep.instruction, job.query, docs, scores)
            prep.cache_ms += (time.perf_counter() - t1) * 1000
        return model_ms

    def result(self, prep: Prepared, *, from_cache: int, model_ms: float) -> RerankResult:
        job = prep.job
        scores = [float(s) for s in prep.cached]  # all filled by now
        ranked = rank(job, scores)
        flagged = [r.id for r in rank(job, scores, top_k=None) if job.threshold is not None and r.score >= job.threshold]
        done = now_ms()
        return RerankResult(
            job_id=job.job_id,
            feed=job.feed,
            model=self.scorer.model,
            ranked=ranked,
            flagged=flagged,
            cached=from_cache,
            timings=Timings(
                queue_wait_ms=max(0.0, float(prep.picked_at_ms - job.created_at)),
                cache_ms=round(prep.cache_ms, 3),
                model_ms=round(model_ms, 3),
                total_ms=max(0.0, float(done - job.created_at)),
            ),
            worker_id=self.worker_id,
        )


_UNSET = object()


def rank(job: RerankJob, scores: Sequence[float], top_k: Any = _UNSET) -> list[RankedCandidate]:
    """Best first (ties in input order); top_k None = every candidate."""
    k = job.top_k if top_k is _UNSET else top_k
    order = best_first(scores)
    if k is not None:
        order = order[:k]
    return [RankedCandidate(id=job.candidates[i].id, score=scores[i], rank=n) for n, i in enumerate(order, 1)]
