"""The scoring core: cache lookup -> score only the misses -> fill the cache -> best-first order.

Both doors call it: the Kafka worker (``lookup_many`` for a whole poll in one MGET, then
``complete`` per job on a pool thread) and the HTTP ingress (``ascore`` on its event loop). What
each door does with ``Scored`` (ids and top_k, or indices and top_n) is its own business.
Raw scores (logits) bypass the cache: it holds [0, 1] scores only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.ranking import best_first
from schemas.scoring import ModelInfo, ScoreRequest
from serve_app.scoring.cache import CacheQuery, ScoreCache
from serve_app.scoring.client import ScoreClient


@dataclass
class Lookup:
    """One request on its way through the core: what the cache knew, and what it cost."""

    request: ScoreRequest
    scores: list[float | None]
    cache_ms: float = 0.0
    model_ms: float = 0.0
    missed: list[int] = field(init=False)  # indices the cache did not know (fixed at lookup time)

    def __post_init__(self) -> None:
        self.missed = [i for i, s in enumerate(self.scores) if s is None]

    @property
    def hits(self) -> int:
        return len(self.scores) - len(self.missed)


@dataclass(frozen=True)
class Scored:
    """Scores in input order, the best-first order, and where the scores came from."""

    scores: list[float]
    order: list[int]
    cached: int
    cache_ms: float
    model_ms: float
    chunks: list[int | None] | None = None  # chunk mode: index of each document's best-scoring window


class ScoringCore:
    """Stateless apart from its cache; thread-safe (the cache is) and usable from asyncio."""

    def __init__(self, cache: ScoreCache | None, chunk_documents: int = 128):
        if chunk_documents < 1:
            raise ValueError("chunk_documents must be >= 1")
        self.cache = cache
        self.chunk_documents = chunk_documents

    # -- the steps ----------------------------------------------------------------------------

    def lookup_many(self, model: ModelInfo, requests: Sequence[ScoreRequest]) -> list[Lookup]:
        """Every request's cached scores in ONE round trip (a whole consumer poll at once)."""
        t0 = time.perf_counter()
        cacheable = [r for r in requests if self._cacheable(r)]
        found: dict[int, list[float | None]] = {}
        if cacheable:
            assert self.cache is not None
            queries = [
                CacheQuery(model.fingerprint, model.kind, r.instruction or "", r.query, r.documents) for r in cacheable
            ]
            for r, scores in zip(cacheable, self.cache.lookup_many(queries)):
                found[id(r)] = scores
        per_request_ms = (time.perf_counter() - t0) * 1000 / max(1, len(requests))
        return [
            Lookup(r, found.get(id(r)) or [None] * len(r.documents), cache_ms=per_request_ms if id(r) in found else 0.0)
            for r in requests
        ]

    def complete(self, model: ModelInfo, client: ScoreClient, lookup: Lookup) -> Scored:
        """Score the misses (one client call per chunk), fill the cache, rank."""
        chunks = self._miss_chunks(lookup)
        if chunks:
            t0 = time.perf_counter()
            fresh = [client.score(chunk) for chunk in chunks]
            lookup.model_ms += (time.perf_counter() - t0) * 1000
            self._merge(lookup, chunks, fresh)
            self._fill(model, lookup, chunks)
        return self._scored(lookup)

    async def acomplete(self, model: ModelInfo, client: ScoreClient, lookup: Lookup) -> Scored:
        """``complete`` for an event loop: chunks are scored concurrently, Redis runs off the loop."""
        chunks = self._miss_chunks(lookup)
        if chunks:
            t0 = time.perf_counter()
            fresh = list(await asyncio.gather(*(client.ascore(chunk) for chunk in chunks)))
            lookup.model_ms += (time.perf_counter() - t0) * 1000
            self._merge(lookup, chunks, fresh)
            if self._cacheable(lookup.request):
                await asyncio.to_thread(self._fill, model, lookup, chunks)
        return self._scored(lookup)

    # -- one-call conveniences ------------------------------------------------------------------

    def score(self, model: ModelInfo, client: ScoreClient, request: ScoreRequest) -> Scored:
        return self.complete(model, client, self.lookup_many(model, [request])[0])

    async def ascore(self, model: ModelInfo, client: ScoreClient, request: ScoreRequest) -> Scored:
        if self._cacheable(request) and request.documents:
            lookup = (await asyncio.to_thread(self.lookup_many, model, [request]))[0]
        else:
            lookup = Lookup(request, [None] * len(request.documents))
        return await self.acomplete(model, client, lookup)

    # -- internals ------------------------------------------------------------------------------

    def _cacheable(self, request: ScoreRequest) -> bool:
        return self.cache is not None and self.cache.enabled and not request.raw_scores

    def _miss_chunks(self, lookup: Lookup) -> list[ScoreRequest]:
        r = lookup.request
        docs = [r.documents[i] for i in lookup.missed]
        n = self.chunk_documents
        return [
            ScoreRequest(query=r.query, documents=docs[s : s + n], instruction=r.instruction, raw_scores=r.raw_scores)
            for s in range(0, len(docs), n)
        ]

    @staticmethod
    def _merge(lookup: Lookup, chunks: list[ScoreRequest], fresh: list[list[float]]) -> None:
        flat: list[float] = []
        for chunk, got in zip(chunks, fresh):
            if len(got) != len(chunk.documents):
                raise RuntimeError(f"score client returned {len(got)} scores for {len(chunk.documents)} documents")
            flat.extend(float(s) for s in got)
        for i, s in zip(lookup.missed, flat):
            lookup.scores[i] = s

    def _fill(self, model: ModelInfo, lookup: Lookup, chunks: list[ScoreRequest]) -> None:
        if not chunks or not self._cacheable(lookup.request):
            return
        assert self.cache is not None
        r = lookup.request
        t0 = time.perf_counter()
        docs = [r.documents[i] for i in lookup.missed]
        scores = [float(lookup.scores[i]) for i in lookup.missed]  # type: ignore[arg-type]
        self.cache.store(model.fingerprint, model.kind, r.instruction or "", r.query, docs, scores)
        lookup.cache_ms += (time.perf_counter() - t0) * 1000

    @staticmethod
    def _scored(lookup: Lookup) -> Scored:
        scores = [float(s) for s in lookup.scores]  # type: ignore[arg-type]
        return Scored(
            scores=scores,
            order=best_first(scores),
            cached=lookup.hits,
            cache_ms=round(lookup.cache_ms, 3),
            model_ms=round(lookup.model_ms, 3),
        )
