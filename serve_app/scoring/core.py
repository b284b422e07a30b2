"""The scoring core: cache lookup -> score only the misses -> fill the cache -> best-first order.

Both doors call it: the Kafka worker (``lookup_many`` for a whole poll in one MGET, then
``complete`` per job on a pool thread) and the HTTP ingress (``ascore`` on its event loop). What
each door does with ``Scored`` (ids and top_k, or indices and top_n) is its own business.
Raw scores (logits) bypass the cache: it holds [0, 1] scores only. Long-document modes are part of
the cache key; in chunk mode each document's best window travels with its score (model and cache).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.ranking import best_first
from schemas.scoring import ChunkedScores, ModelInfo, ScoreRequest, ScoreResult
from serve_app.scoring.cache import CacheQuery, ScoreCache, mode_tag
from serve_app.scoring.client import ScoreClient


@dataclass
class Lookup:
    """One request on its way through the core: what the cache knew, and what it cost."""

    request: ScoreRequest
    scores: list[float | None]
    cache_ms: float = 0.0
    model_ms: float = 0.0
    chunks: list[int | None] | None = None  # chunk mode: each document's best window (None until known)
    missed: list[int] = field(init=False)  # indices the cache did not know (fixed at lookup time)

    def __post_init__(self) -> None:
        self.missed = [i for i, s in enumerate(self.scores) if s is None]
        if self.chunks is None and self.request.long_documents == "chunk":
            self.chunks = [None] * len(self.scores)

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
        found: dict[int, Lookup] = {}
        if cacheable:
            assert self.cache is not None
            queries = [
                CacheQuery(model.fingerprint, model.kind, r.instruction or "", r.query, r.documents, mode_tag(r))
                for r in cacheable
            ]
            for r, entries in zip(cacheable, self.cache.lookup_entries(queries)):
                chunks = [None if e is None else e[1] for e in entries] if r.long_documents == "chunk" else None
                found[id(r)] = Lookup(r, [None if e is None else e[0] for e in entries], chunks=chunks)
        per_request_ms = (time.perf_counter() - t0) * 1000 / max(1, len(requests))
        for lookup in found.values():
            lookup.cache_ms = per_request_ms
        return [found.get(id(r)) or Lookup(r, [None] * len(r.documents)) for r in requests]

    def complete(self, model: ModelInfo, client: ScoreClient, lookup: Lookup) -> Scored:
        """Score the misses (one client call per part of ``chunk_documents``), fill the cache, rank."""
        parts = self._miss_parts(lookup)
        if parts:
            t0 = time.perf_counter()
            fresh = [client.score(part) for part in parts]
            lookup.model_ms += (time.perf_counter() - t0) * 1000
            self._merge(lookup, parts, fresh)
            self._fill(model, lookup, parts)
        return self._scored(lookup)

    async def acomplete(self, model: ModelInfo, client: ScoreClient, lookup: Lookup) -> Scored:
        """``complete`` for an event loop: parts are scored concurrently, Redis runs off the loop."""
        parts = self._miss_parts(lookup)
        if parts:
            t0 = time.perf_counter()
            fresh = list(await asyncio.gather(*(client.ascore(part) for part in parts)))
            lookup.model_ms += (time.perf_counter() - t0) * 1000
            self._merge(lookup, parts, fresh)
            if self._cacheable(lookup.request):
                await asyncio.to_thread(self._fill, model, lookup, parts)
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

    def _miss_parts(self, lookup: Lookup) -> list[ScoreRequest]:
        """The missed documents as requests of at most ``chunk_documents`` (same query and handling)."""
        r = lookup.request
        docs = [r.documents[i] for i in lookup.missed]
        n = self.chunk_documents
        return [dataclasses.replace(r, documents=docs[s : s + n]) for s in range(0, len(docs), n)]

    @staticmethod
    def _merge(lookup: Lookup, parts: list[ScoreRequest], fresh: list[ScoreResult]) -> None:
        scores: list[float] = []
        chunks: list[int] = []
        for part, got in zip(parts, fresh):
            part_scores = got.scores if isinstance(got, ChunkedScores) else got
            if len(part_scores) != len(part.documents):
                raise RuntimeError(
                    f"score client returned {len(part_scores)} scores for {len(part.documents)} documents"
                )
            if lookup.chunks is not None:
                if not isinstance(got, ChunkedScores) or len(got.chunks) != len(part_scores):
                    raise RuntimeError("score client returned no best chunks for a long_documents=chunk request")
                chunks.extend(int(c) for c in got.chunks)
            scores.extend(float(s) for s in part_scores)
        for k, i in enumerate(lookup.missed):
            lookup.scores[i] = scores[k]
            if lookup.chunks is not None:
                lookup.chunks[i] = chunks[k]

    def _fill(self, model: ModelInfo, lookup: Lookup, parts: list[ScoreRequest]) -> None:
        if not parts or not self._cacheable(lookup.request):
            return
        assert self.cache is not None
        r = lookup.request
        t0 = time.perf_counter()
        docs = [r.documents[i] for i in lookup.missed]
        scores = [float(lookup.scores[i]) for i in lookup.missed]  # type: ignore[arg-type]
        chunks = None if lookup.chunks is None else [int(lookup.chunks[i]) for i in lookup.missed]  # type: ignore[arg-type]
        mode = mode_tag(r)
        self.cache.store(
            model.fingerprint, model.kind, r.instruction or "", r.query, docs, scores, mode=mode, chunks=chunks
        )
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
            chunks=None if lookup.chunks is None else list(lookup.chunks),
        )
