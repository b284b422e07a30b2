"""How the scoring core reaches a model: the ``ScoreClient`` protocol and its two implementations.

``ServeScoreClient`` talks to the Reranker deployment through its Ray Serve handle (production:
the Kafka worker and the HTTP ingress); ``EngineScoreClient`` wraps an in-process engine
(``--direct-engine``, benchmarks, unit tests). Neither module-level import pulls in torch or Ray.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from schemas.scoring import ChunkedScores, ModelInfo, ScoreRequest, ScoreResult


class ScoreClient(Protocol):
    """Scores one job's documents with one model; one call per job or part of one, never per document.

    A chunk-mode request answers ``ChunkedScores`` (scores and each document's best window), any other
    a plain list of floats.
    """

    def info(self) -> ModelInfo: ...

    def score(self, request: ScoreRequest) -> ScoreResult: ...

    async def ascore(self, request: ScoreRequest) -> ScoreResult: ...


def as_result(got: Any) -> ScoreResult:
    """A model's answer as plain Python floats (and ints), whatever number types the model side used."""
    if isinstance(got, ChunkedScores):
        return ChunkedScores([float(s) for s in got.scores], [int(c) for c in got.chunks])
    return [float(s) for s in got]


class ServeScoreClient:
    """The ``Reranker`` deployment handle; ``timeout_s`` bounds each call (TimeoutError beyond)."""

    def __init__(self, handle: Any, timeout_s: float):
        self._handle = handle
        self._timeout_s = timeout_s
        self._info: ModelInfo | None = None
        self._instruction: tuple[str | None] | None = None

    def info(self) -> ModelInfo:
        if self._info is None:
            self._info = self._handle.info.remote().result(timeout_s=max(self._timeout_s, 60.0))
        return self._info

    async def ainfo(self) -> tuple[ModelInfo, str | None]:
        """Model and default instruction without blocking an event loop (the HTTP ingress)."""
        if self._info is None or self._instruction is None:
            info = await asyncio.wait_for(self._handle.info.remote(), self._timeout_s)
            instruction = await asyncio.wait_for(self._handle.default_instruction.remote(), self._timeout_s)
            self._info, self._instruction = info, (instruction,)
        return self._info, self._instruction[0]

    def score(self, request: ScoreRequest) -> ScoreResult:
        return as_result(self._handle.score.remote(request).result(timeout_s=self._timeout_s))

    async def ascore(self, request: ScoreRequest) -> ScoreResult:
        return as_result(await asyncio.wait_for(self._handle.score.remote(request), self._timeout_s))

    async def acount_tokens(self, texts: list[str]) -> list[int]:
        return list(await asyncio.wait_for(self._handle.count_tokens.remote(texts), self._timeout_s))


class EngineScoreClient:
    """An in-process engine (``serve_app.engine.RerankEngine``), duck-typed so torch loads only with it."""

    def __init__(self, engine: Any):
        self._engine = engine

    def info(self) -> ModelInfo:
        return self._engine.info

    def score(self, request: ScoreRequest) -> ScoreResult:
        return as_result(self._engine.score_many([request])[0])

    async def ascore(self, request: ScoreRequest) -> ScoreResult:
        return await asyncio.to_thread(self.score, request)
