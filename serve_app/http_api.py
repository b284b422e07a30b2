"""The HTTP entry point: ``POST /v1/rerank`` (Cohere/Jina/vLLM shape), ``POST /rerank`` (TEI shape),
health, readiness, Prometheus metrics and OpenAPI docs (``/docs``).

A light ingress deployment (no model, no GPU): it validates and limits requests and hands them to
the scoring core (``serve_app.scoring``, the same path the Kafka worker takes: cache lookup,
only the misses to the ``Reranker`` replicas, cache fill, best-first order).
Every error answers a JSON body with a reason (and, for limits, the settings key): never a
stack trace.
"""


import asyncio
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from schemas.http import (
    DocumentObject,
    ErrorBody,
    RerankRequest,
    RerankResponse,
    RerankResultItem,
    TeiRank,
    TeiRerankRequest,
    Usage,
)
from schemas.limits import check_limits
from schemas.settings import Settings
from schemas.scoring import ModelInfo, ScoreRequest
from serve_app.scoring import ScoreCache, Scored, ScoringCore
from serve_app.scoring.client import ServeScoreClient

log = logging.getLogger("ray.serve")

api = FastAPI(
    title="rerank-stream",
    description="Rerank documents against a query with a cross-encoder; scores cached in Redis.",
    version="1",
)


class ApiError(Exception):
    """An error with its HTTP status and a client-facing reason."""

    def __init__(self, status: int, reason: str, *, limit: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.reason, self.limit, self.headers = status, reason, limit, headers


@api.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    body = ErrorBody(error=exc.reason, limit=exc.limit).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()[:10]
    ]
    status = 400 if any(e.get("type") == "json_invalid" for e in exc.errors()) else 422
    reason = "malformed JSON body" if status == 400 else "request does not match the schema"
    return JSONResponse(ErrorBody(error=reason, detail=problems).model_dump(exclude_none=True), status_code=status)


@api.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in the rerank API")
    return JSONResponse(ErrorBody(error="internal error").model_dump(exclude_none=True), status_code=500)


class ApiMetrics:
    """Per-replica Prometheus metrics of the HTTP path (a registry of its own, no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rerank_http_requests_total", "HTTP requests.", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "rerank_http_request_seconds", "Request latency.", ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.documents = Counter("rerank_http_documents_total", "Documents ranked.", ["source"], registry=self.registry)


class _Observed:
    """Counts a request by route and final status and times it."""

    def __init__(self, metrics: ApiMetrics, route: str):
        self.metrics, self.route = metrics, route

    async def __aenter__(self):
        self.t0 = time.perf_counter()

    async def __aexit__(self, exc_type, exc, tb):
        status = 200 if exc is None else getattr(exc, "status", 500)
        self.metrics.requests.labels(self.route, str(status)).inc()
        self.metrics.latency.labels(self.route).observe(time.perf_counter() - self.t0)
        return False


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class RerankAPI:
    def __init__(self, reranker, settings_json: str):
        self.settings = Settings.model_validate_json(settings_json)
        self.client = ServeScoreClient(reranker, self.settings.serve.request_timeout_s)
        cache = ScoreCache(self.settings.redis, log_interval_s=self.settings.worker.log_interval_s)
        self.core = ScoringCore(cache, self.settings.worker.chunk_documents)
        self.metrics = ApiMetrics()
        self._model_lock = asyncio.Lock()

    # -- routes ---------------------------------------------------------------------------------

    @api.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True,
              responses={s: {"model": ErrorBody} for s in (400, 404, 413, 422, 503, 504)})
    async def rerank(self, body: RerankRequest) -> RerankResponse:
        """Cohere / Jina / vLLM request shape; results sorted by relevance, best first."""
        async with self._observe("/v1/rerank"):
            info = await self._served_model(body.model)
            texts = body.texts()
            scored = await self._scores(body.query, texts, body.instruction, raw=False)
            scores, order = scored.scores, scored.order[: body.top_n]
            return RerankResponse(
                id=uuid.uuid4().hex,
                model=info.id,
                results=[
                    RerankResultItem(
                        index=i, relevance_score=scores[i],
                        document=DocumentObject(text=texts[i]) if body.return_documents else None,
                    )
                    for i in order
                ],
                usage=Usage(documents=len(texts), cached_documents=scored.cached),
            )

    @api.post("/rerank", response_model=list[TeiRank], response_model_exclude_none=True,
              responses={s: {"model": ErrorBody} for s in (400, 413, 422, 503, 504)})
    async def rerank_tei(self, body: TeiRerankRequest) -> list[TeiRank]:
        """text-embeddings-inference request shape; sorted by score, descending."""
        async with self._observe("/rerank"):
            info = await self._served_model(None)
            if not body.truncate:
                await self._refuse_long(body.query, body.texts, info.max_length)
            scored = await self._scores(body.query, body.texts, body.instruction, raw=body.raw_scores)
            return [
                TeiRank(index=i, score=scored.scores[i], text=body.texts[i] if body.return_text else None)
                for i in scored.order
            ]

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """The API process is up (says nothing about the model)."""
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """A model replica answers: the model is loaded and scoring is possible."""
        try:
            info, _ = await asyncio.wait_for(self._model_info(), timeout=5)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return JSONResponse({"status": "not ready", "reason": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ready", "model": info.fingerprint, "fallback": info.fallback})

    @api.get("/metrics")
    async def metrics(self) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- the shared path --------------------------------------------------------------------------

    async def _scores(self, query: str, texts: list[str], instruction: str | None, *, raw: bool) -> Scored:
        """Limits, then the scoring core (cache, misses to the model, fill, order)."""
        info, default_instruction = await self._model_info()
        effective = instruction if instruction is not None else (default_instruction or "")
        violation = check_limits(self.settings.limits, query, effective, texts)
        if violation is not None:
            raise ApiError(413, violation.message, limit=violation.limit)
        request = ScoreRequest(query=query, documents=texts, instruction=effective, raw_scores=raw)
        scored = await self._mapped(self.core.ascore(info, self.client, request))
        self.metrics.documents.labels("cache").inc(scored.cached)
        self.metrics.documents.labels("model").inc(len(texts) - scored.cached)
        return scored

    async def _mapped(self, call: Any) -> Any:
        """Await one call to the model side, its failure modes mapped to HTTP answers."""
        timeout = self.settings.serve.request_timeout_s
        try:
            return await call
        except BackPressureError as exc:
            raise ApiError(503, f"overloaded: {exc}", headers={"Retry-After": "1"}) from None
        except DeploymentUnavailableError:
            raise ApiError(503, "model deployment unavailable", headers={"Retry-After": "5"}) from None
        except asyncio.TimeoutError:
            raise ApiError(504, f"no answer from the model within {timeout:g} s (serve.request_timeout_s)") from None

    async def _model_info(self) -> tuple[ModelInfo, str | None]:
        """Served model and its default instruction, asked once (under a lock: no thundering herd)."""
        async with self._model_lock:
            return await self._mapped(self.client.ainfo())

    async def _served_model(self, requested: str | None):
        info, _ = await self._model_info()
        if requested is not None and requested not in self.settings.model.allowed_names(info.id):
            raise ApiError(404, f"model {requested!r} is not served here; served: {info.id!r}")
        return info

    async def _refuse_long(self, query: str, texts: list[str], max_length: int) -> None:
        counts = await self._mapped(self.client.acount_tokens([query, *texts]))
        q = counts[0]
        for i, n in enumerate(counts[1:]):
            if q + n > max_length:
                raise ApiError(413, f"text {i} with the query has {q + n} tokens, model max {max_length}; "
                               "send truncate=true to truncate", limit="model.max_length")

    def _observe(self, route: str):
        return _Observed(self.metrics, route)
