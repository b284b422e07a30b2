"""The HTTP entry point, the ``RerankAPI`` ingress: the rerank routes each peer client speaks.

``POST /v1/rerank`` and ``/v2/rerank`` (Cohere v1/v2, Jina, vLLM), ``POST /rerank`` (TEI, or a
Cohere-shaped body as LiteLLM posts it), ``POST /score`` (vLLM), ``GET /v1/models`` (OpenAI list),
``GET /info``, the playground page, health, readiness, Prometheus metrics and OpenAPI (``/docs``).

A light deployment (no model, no GPU): it checks keys, validates and limits requests and hands them
to the scoring core (``serve_app.scoring``, the same path the Kafka worker takes: cache lookup, only
the misses to the ``Reranker`` replicas, cache fill, best-first order); ``serve_app/http/`` renders
the answers and holds the gates. Middleware, outermost first: ``ApiKeyGate`` (401 before the body is
read), ``JsonBodyGate`` (strict JSON). Ray Serve's proxy honours an incoming ``X-Request-Id`` (or makes
one) and echoes it as a response header; the routes use it as the response ``id``.
"""

import asyncio
import logging
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from schemas.http import (
    COHERE_BODY_EXAMPLES,
    SCORE_BODY_EXAMPLES,
    TEI_BODY_EXAMPLES,
    AnyRerankRequest,
    ErrorBody,
    ModelCard,
    ModelList,
    PairScoreRequest,
    RerankRequest,
    RerankResponse,
    ScoreResponse,
    ScoringOptions,
    ServiceInfo,
    TeiRank,
)
from schemas.limits import check_limits, estimate_tokens
from schemas.scoring import ModelInfo, ScoreRequest
from schemas.settings import DEFAULT_MODEL, LimitsSettings, Settings
from serve_app.http.auth import ApiKeyGate, ApiKeys
from serve_app.http.body_gate import JsonBodyGate
from serve_app.http.errors import ApiError, install_error_handlers, show
from serve_app.http.metrics import ApiMetrics
from serve_app.http.render import Ranked, cohere_response, pair_tokens, score_response, tei_ranks
from serve_app.http.tokens import TokenCounter
from serve_app.playground import playground_response
from serve_app.scoring import ScoreCache, ScoringCore
from serve_app.scoring.client import ServeScoreClient
from serve_app.tracing import TracedScoreClient
from serve_app.tracing import configure as configure_tracing

log = logging.getLogger("ray.serve")

try:
    VERSION = version("rerank-stream")
except PackageNotFoundError:  # a source tree that was never installed
    VERSION = "0+unknown"

api = FastAPI(
    title="rerank-stream",
    description=(
        "Rerank documents against a query with a cross-encoder; scores cached in Redis. Speaks the Cohere "
        "(v1, v2), Jina, vLLM and text-embeddings-inference APIs. With API keys on, send "
        "`Authorization: Bearer <key>`."
    ),
    version=VERSION,
)
install_error_handlers(api)

JSON_BODY_ROUTES = frozenset({"/v1/rerank", "/v2/rerank", "/rerank", "/score"})
"""Paths of the routes whose body JsonBodyGate checks (the POST routes below)."""
_ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 401, 413, 415, 422, 503, 504)}
_MODEL_ERRORS: dict[int | str, dict[str, Any]] = {**_ERRORS, 404: {"model": ErrorBody}}
_NO_KEYS = ApiKeys(None)


def _replica_attr(name: str, default: Any) -> Any:
    """An attribute of this replica's RerankAPI instance; ``default`` outside a replica (a bare test app)."""
    try:
        return getattr(serve.get_replica_context().servable_object, name)
    except Exception:  # noqa: BLE001 - no replica context
        return default


def _limits() -> LimitsSettings:
    settings = _replica_attr("settings", None)
    return (settings or Settings()).limits


def _keys() -> ApiKeys:
    return _replica_attr("keys", _NO_KEYS)


api.add_middleware(JsonBodyGate, routes=JSON_BODY_ROUTES, limits_of=_limits)
api.add_middleware(ApiKeyGate, keys_of=_keys)  # added last = outermost: no body is read without a key


def _request_id(request: Request) -> str:
    """The X-Request-Id Serve's proxy put in (the client's, or one it made); a fresh one without a proxy."""
    return request.headers.get("x-request-id") or uuid.uuid4().hex


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class RerankAPI:
    def __init__(self, reranker, settings_json: str, models: dict[str, Any] | None = None):
        self.settings = Settings.model_validate_json(settings_json)
        # OTLP export when an endpoint is configured; FastAPI's own OpenTelemetry support then makes each
        # request a server span (child of its traceparent header) around the route's rerank.score spans.
        configure_tracing(self.settings.tracing, "api")
        self.keys = ApiKeys.from_settings(self.settings.serve)
        if self.keys.enabled:
            n = len(self.settings.serve.api_key_list() or [])
            log.info("API keys on (%d keys; /metrics %s)", n, "keyed" if self.keys.protect_metrics else "open")
            if n == 0:
                log.error("serve.api_keys arrived masked (dumped without REVEAL_SECRETS): every keyed route is 401")
        # One client per model deployment: ``reranker`` serves model.*, ``models`` the extra models by key.
        timeout = self.settings.serve.request_timeout_s
        handles = {DEFAULT_MODEL: reranker, **(models or {})}
        self.clients = {key: TracedScoreClient(ServeScoreClient(h, timeout)) for key, h in handles.items()}
        self.client = self.clients[DEFAULT_MODEL]
        self.tokens = {key: TokenCounter(c.acount_tokens) for key, c in self.clients.items()}
        cache = ScoreCache(self.settings.redis, log_interval_s=self.settings.worker.log_interval_s)
        self.core = ScoringCore(cache, self.settings.worker.chunk_documents)
        self.api_metrics = ApiMetrics()
        self.started = int(time.time())
        self._model_lock = asyncio.Lock()

    # -- routes ---------------------------------------------------------------------------------

    @api.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=_MODEL_ERRORS)
    async def rerank_v1(
        self, request: Request, body: Annotated[RerankRequest, Body(openapi_examples=COHERE_BODY_EXAMPLES)]
    ) -> RerankResponse:
        """Cohere v1 (`cohere.Client.rerank`), Jina and vLLM; results best first."""
        return await self._cohere(request, body, "/v1/rerank", api_version="1")

    @api.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=_MODEL_ERRORS)
    async def rerank_v2(
        self, request: Request, body: Annotated[RerankRequest, Body(openapi_examples=COHERE_BODY_EXAMPLES)]
    ) -> RerankResponse:
        """Cohere v2 (`cohere.ClientV2.rerank`), vLLM; results best first."""
        return await self._cohere(request, body, "/v2/rerank", api_version="2")

    @api.post(
        "/rerank",
        response_model=list[TeiRank] | RerankResponse,
        response_model_exclude_none=True,
        responses=_MODEL_ERRORS,
    )
    async def rerank_tei(
        self,
        request: Request,
        response: Response,
        body: Annotated[AnyRerankRequest, Body(openapi_examples=TEI_BODY_EXAMPLES)],
    ) -> list[TeiRank] | RerankResponse:
        """text-embeddings-inference (`texts`): `[{index, score, text?}]` best first, tokens in `X-Total-Tokens`.
        A Cohere-shaped body (`documents`, as LiteLLM posts it) is answered in the Cohere shape."""
        if isinstance(body, RerankRequest):
            return await self._cohere(request, body, "/rerank", api_version="1")
        async with self.api_metrics.observe("/rerank"):
            ranked = await self._rank(
                [(body.query, body.texts)], body, raw=body.raw_scores, refuse_long=not body.truncate
            )
            response.headers["x-total-tokens"] = str(ranked.tokens)
            return tei_ranks(ranked, body.texts, return_text=body.return_text)

    @api.post("/score", response_model=ScoreResponse, responses=_MODEL_ERRORS)
    async def score(
        self, request: Request, body: Annotated[PairScoreRequest, Body(openapi_examples=SCORE_BODY_EXAMPLES)]
    ) -> ScoreResponse:
        """vLLM: `text_1` against each `text_2` (1:1, 1:N, or N:N pairs); scores in input order."""
        async with self.api_metrics.observe("/score"):
            await self._served_model(body.model)
            groups: dict[str, list[str]] = {}
            slots: list[tuple[int, int]] = []
            for query, document in body.pairs():
                docs = groups.setdefault(query, [])
                slots.append((list(groups).index(query), len(docs)))
                docs.append(document)
            ranked = await self._rank(list(groups.items()), body, raw=False)
            return score_response(_request_id(request), ranked, slots, int(time.time()))

    @api.get("/v1/models", response_model=ModelList)
    async def models(self) -> ModelList:
        """Each served model, then the other names a request may use for it (aliases, `model.allowed_models`)."""
        cards = []
        for key in self.settings.model.keys:
            info, _ = await self._model_info(key)
            names = self.settings.model.names_by_model(info.id)[key] - {info.id, DEFAULT_MODEL}
            cards += [ModelCard(id=name, created=self.started, root=info.id) for name in [info.id, *sorted(names)]]
        return ModelList(data=cards)

    @api.get("/info", response_model=ServiceInfo)
    async def info(self) -> ServiceInfo:
        """The served model (FALLBACK when `fallback` is true), its window, device and dtype."""
        m = await self._served_model(None)
        return ServiceInfo(
            model=m.id,
            kind=m.kind,
            revision=m.revision,
            max_length=m.max_length,
            device=m.device,
            dtype=m.dtype,
            fallback=m.fallback,
            version=VERSION,
        )

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
        """Prometheus (`rerank_http_*`); keyed only with `serve.metrics_require_key`."""
        return Response(generate_latest(self.api_metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- the shared path --------------------------------------------------------------------------

    async def _cohere(self, request: Request, body: RerankRequest, route: str, *, api_version: str) -> RerankResponse:
        async with self.api_metrics.observe(route):
            await self._served_model(body.model)
            texts = body.texts()
            ranked = await self._rank([(body.query, texts)], body, raw=False)
            return cohere_response(
                _request_id(request),
                ranked,
                texts,
                top_n=body.top_n,
                return_documents=body.return_documents,
                api_version=api_version,
            )

    async def _rank(
        self, groups: list[tuple[str, list[str]]], options: ScoringOptions, *, raw: bool, refuse_long: bool = False
    ) -> Ranked:
        """Limits, then the scoring core once per query group, then the token counts (at most one call).

        Counted after scoring, so an accounting call never takes a replica slot its own request's scoring
        needs; when the replicas are too busy to count, usage is estimated and says so.
        """
        key = await self._model_key(getattr(options, "model", None))
        info, default_instruction = await self._model_info(key)
        client = self.clients[key]
        instruction = options.instruction if options.instruction is not None else (default_instruction or "")
        texts = [d for _, docs in groups for d in docs]
        violation = check_limits(self.settings.limits, max((q for q, _ in groups), key=len), instruction, texts)
        if violation is not None and not refuse_long:
            raise ApiError(413, violation.message, limit=violation.limit)
        requests = [options.score_request(q, docs, instruction, raw=raw) for q, docs in groups]
        to_count = [instruction, *(q for q, _ in groups), *texts]
        counts: dict[str, int] | None = None
        if refuse_long:  # "does not fit the model" first: more useful than a size limit
            counts = await self._mapped(self.tokens[key].counts(to_count))
            self._refuse_long(requests[0], counts, info.max_length)
            if violation is not None:
                raise ApiError(413, violation.message, limit=violation.limit)
        scored = await asyncio.gather(*(self._mapped(self.core.ascore(info, client, r)) for r in requests))
        estimated = False
        if counts is None:
            try:
                counts = await self._mapped(self.tokens[key].counts(to_count))
            except ApiError as exc:
                if exc.status not in (503, 504):
                    raise
                counts, estimated = {t: estimate_tokens(t) for t in to_count}, True
        cached = sum(s.cached for s in scored)
        self.api_metrics.documents.labels("cache").inc(cached)
        self.api_metrics.documents.labels("model").inc(len(texts) - cached)
        pairs = [(q, d) for q, docs in groups for d in docs]
        tokens = pair_tokens(counts, pairs, instruction, options.max_tokens_per_doc)
        return Ranked(info, list(scored), tokens, tokens_estimated=estimated)

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

    async def _model_info(self, key: str = DEFAULT_MODEL) -> tuple[ModelInfo, str | None]:
        """A served model and its default instruction, asked once (under a lock: no thundering herd)."""
        async with self._model_lock:
            return await self._mapped(self.clients[key].ainfo())

    async def _model_key(self, requested: str | None) -> str:
        """The key of the model a request names (none = the default model); 404 for a name no model has."""
        if requested is None:
            return DEFAULT_MODEL
        info, _ = await self._model_info()
        key = self.settings.model.resolve(requested, info.id)
        if key is None:
            served = sorted(n for names in self.settings.model.names_by_model(info.id).values() for n in names)
            raise ApiError(404, f"model {show(requested)} is not served here; served: {served} (GET /v1/models)")
        return key

    async def _served_model(self, requested: str | None) -> ModelInfo:
        info, _ = await self._model_info(await self._model_key(requested))
        return info

    @staticmethod
    def _refuse_long(request: ScoreRequest, counts: dict[str, int], max_length: int) -> None:
        """TEI's truncate=false: a text that does not fit the window with the query is a 413 (not in chunk mode)."""
        if request.long_documents == "chunk":
            return
        q, cap = counts[request.query], request.max_tokens_per_doc
        for i, text in enumerate(request.documents):
            n = counts[text] if cap is None else min(counts[text], cap)
            if q + n > max_length:
                raise ApiError(
                    413,
                    f"text {i} with the query has {q + n} tokens, model max {max_length}; "
                    "send truncate=true to truncate or long_documents=chunk to score it whole",
                    limit="model.max_length",
                )
