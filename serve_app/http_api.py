"""The HTTP entry point: ``POST /v1/rerank`` (Cohere/Jina/vLLM shape), ``POST /rerank`` (TEI shape),
health, readiness, Prometheus metrics and OpenAPI docs (``/docs``).

A light ingress deployment (no model, no GPU): it validates and limits requests and hands them to
the scoring core (``serve_app.scoring``, the same path the Kafka worker takes: cache lookup,
only the misses to the ``Reranker`` replicas, cache fill, best-first order).
Every error, FastAPI's and Starlette's own included (404, 405, 422), answers ``ErrorBody`` JSON
with a reason (and, for limits, the settings key): never a stack trace, never a 5xx for bad input.

The JSON body of the rerank routes passes ``JsonBodyGate`` before FastAPI parses it: content type,
size, then ``schemas.http.decode_json_body`` (UTF-8, nesting, NaN, lone surrogates, ...), so bad bytes
get a precise 4xx instead of reaching a ``.encode()`` downstream.
"""

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.http import (
    BodyRejected,
    DocumentObject,
    ErrorBody,
    RerankRequest,
    RerankResponse,
    RerankResultItem,
    TeiRank,
    TeiRerankRequest,
    Usage,
    decode_json_body,
    max_body_bytes,
)
from schemas.limits import check_limits
from schemas.scoring import ModelInfo, ScoreRequest
from schemas.settings import Settings
from serve_app.playground import playground_response
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


class ErrorResponse(JSONResponse):
    """An ``ErrorBody`` as JSON; ASCII-escaped, so a reason quoting odd input can never fail to encode."""

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        limit: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ):
        body = ErrorBody(error=reason, limit=limit, detail=detail).model_dump(exclude_none=True)
        super().__init__(body, status_code=status, headers=headers)

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _show(value: str, limit: int = 80) -> str:
    """repr() of client input for a reason, cut to ``limit`` characters."""
    text = repr(value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


@api.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return ErrorResponse(exc.status, exc.reason, limit=exc.limit, headers=exc.headers)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own 404/405 (and FastAPI's 400 "error parsing the body") in the ErrorBody shape."""
    where = f"{request.method} {_show(request.url.path)}"
    if exc.status_code == 404:
        reason = f"no route {where}"
    elif exc.status_code == 405:
        allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "?")
        reason = f"method not allowed: {where}; allowed: {allowed}"
    else:
        reason = exc.detail if isinstance(exc.detail, str) else f"HTTP {exc.status_code}"
    return ErrorResponse(exc.status_code, reason, headers=dict(exc.headers) if exc.headers else None)


@api.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    problems = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in errors[:10]]
    if any(e.get("type") == "json_invalid" for e in errors):  # only if JsonBodyGate was bypassed
        return ErrorResponse(400, "malformed JSON body", detail=problems)
    first = problems[0] if problems else {"loc": [], "msg": ""}
    reason = f"request does not match the schema: {'.'.join(first['loc'][1:]) or 'body'}: {first['msg']}"
    return ErrorResponse(422, reason, detail=problems)


@api.exception_handler(Exception)
async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in the rerank API")
    return ErrorResponse(500, "internal error")


def _json_media_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _body_limit() -> tuple[int, str]:
    """Body size bound of this replica's settings (the ingress instance is the replica's servable)."""
    try:
        settings = serve.get_replica_context().servable_object.settings  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - outside a replica (the bare app under a test client): default limits
        settings = Settings()
    return max_body_bytes(settings.limits)


_DERIVED = " (the most the limits.* character and token limits can need)"


class JsonBodyGate:
    """ASGI middleware: reads, bounds and strictly decodes the body of the JSON routes.

    Runs before FastAPI parses the body, so size is bounded while reading (Content-Length first),
    nesting before ``json.loads`` recurses, and lone surrogates answer 422 with their position instead
    of a 500 from the first ``.encode()``. The checked bytes are then replayed to FastAPI unchanged.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._json_route(scope):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        try:
            body = await self._checked_body(headers, receive)
        except BodyRejected as exc:
            await ErrorResponse(exc.status, exc.reason, limit=exc.limit, detail=exc.detail)(scope, receive, send)
            return
        if body is None:  # the client went away while sending
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    def _json_route(scope: Scope) -> bool:
        """A POST to a route that takes a JSON body (other requests go on to the router as they are)."""
        if scope.get("method") != "POST":
            return False
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # under a Serve route_prefix
            path = path[len(root) :]
        return path in JSON_BODY_ROUTES

    @staticmethod
    async def _checked_body(headers: dict[str, str], receive: Receive) -> bytes | None:
        content_type = headers.get("content-type")
        if not _json_media_type(content_type):
            shown = _show(content_type) if content_type else "none"
            raise BodyRejected(415, f"content-type {shown} is not JSON; send application/json")
        limit, key = _body_limit()
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise BodyRejected(413, f"request body is {int(declared)} bytes, limit {limit}{_DERIVED}", limit=key)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyRejected(413, f"request body is over {limit} bytes{_DERIVED}", limit=key)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        decode_json_body(body)
        return body


JSON_BODY_ROUTES = frozenset({"/v1/rerank", "/rerank"})
"""Paths of the routes whose body JsonBodyGate checks (the POST routes below)."""
api.add_middleware(JsonBodyGate)


class ApiMetrics:
    """Per-replica Prometheus metrics of the HTTP path (a registry of its own, no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rerank_http_requests_total", "HTTP requests.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "rerank_http_request_seconds",
            "Request latency.",
            ["route"],
            registry=self.registry,
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
        self.api_metrics = ApiMetrics()
        self._model_lock = asyncio.Lock()

    # -- routes ---------------------------------------------------------------------------------

    @api.post(
        "/v1/rerank",
        response_model=RerankResponse,
        response_model_exclude_none=True,
        responses={s: {"model": ErrorBody} for s in (400, 404, 413, 415, 422, 503, 504)},
    )
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
                        index=i,
                        relevance_score=scores[i],
                        document=DocumentObject(text=texts[i]) if body.return_documents else None,
                    )
                    for i in order
                ],
                usage=Usage(documents=len(texts), cached_documents=scored.cached),
            )

    @api.post(
        "/rerank",
        response_model=list[TeiRank],
        response_model_exclude_none=True,
        responses={s: {"model": ErrorBody} for s in (400, 413, 415, 422, 503, 504)},
    )
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

    @api.get("/", include_in_schema=False)
    @api.get("/playground", response_class=HTMLResponse)
    async def playground(self) -> HTMLResponse:
        """The playground page (open it in a browser): open without an API key, it has its own key field."""
        return playground_response()

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
        return Response(generate_latest(self.api_metrics.registry), media_type=CONTENT_TYPE_LATEST)

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
        self.api_metrics.documents.labels("cache").inc(scored.cached)
        self.api_metrics.documents.labels("model").inc(len(texts) - scored.cached)
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
        except TimeoutError:
            raise ApiError(504, f"no answer from the model within {timeout:g} s (serve.request_timeout_s)") from None

    async def _model_info(self) -> tuple[ModelInfo, str | None]:
        """Served model and its default instruction, asked once (under a lock: no thundering herd)."""
        async with self._model_lock:
            return await self._mapped(self.client.ainfo())

    async def _served_model(self, requested: str | None):
        info, _ = await self._model_info()
        if requested is not None and requested not in self.settings.model.allowed_names(info.id):
            raise ApiError(404, f"model {_show(requested)} is not served here; served: {info.id!r}")
        return info

    async def _refuse_long(self, query: str, texts: list[str], max_length: int) -> None:
        counts = await self._mapped(self.client.acount_tokens([query, *texts]))
        q = counts[0]
        for i, n in enumerate(counts[1:]):
            if q + n > max_length:
                raise ApiError(
                    413,
                    f"text {i} with the query has {q + n} tokens, model max {max_length}; "
                    "send truncate=true to truncate",
                    limit="model.max_length",
                )

    def _observe(self, route: str):
        return _Observed(self.api_metrics, route)
