"""HTTP wire contracts of the rerank API, one model per client shape, and the strict decoding of a
request body that comes before them.

Shapes: Cohere v1/v2, Jina and vLLM rerank (``RerankRequest`` -> ``RerankResponse``, which carries
Cohere's ``meta`` and vLLM/Jina's ``usage`` side by side: each client reads its own), TEI
(``TeiRerankRequest`` -> ``list[TeiRank]``), vLLM ``/score`` (``PairScoreRequest`` ->
``ScoreResponse``), the OpenAI model list and ``/info``. Unknown request fields are ignored (peer
clients send extras such as ``max_chunks_per_doc``, ``rank_fields``, ``priority``). Every scoring
body takes the same options (``ScoringOptions``: instruction and the long-document handling), mapped
onto ``schemas.scoring.ScoreRequest`` in one place.

``decode_json_body`` is the HTTP door's input boundary, the same policy as the Kafka door's decoder:
nesting bounded before parsing, UTF-8 only, no NaN/Infinity, no integers wider than
``MAX_INT_DIGITS``, no duplicate keys, a top-level object, and no lone surrogates anywhere (the
caller bounds the size with ``max_body_bytes``). Each rejection is a ``BodyRejected`` with an HTTP
status and a reason that says where.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, model_validator

from schemas.scoring import LongDocuments, ScoreRequest, TruncationDirection
from schemas.settings import LimitsSettings
from schemas.strict_json import MAX_DEPTH, StrictJsonError, loads_object
from schemas.strict_json import MAX_INT_DIGITS as STRICT_MAX_INT_DIGITS
from schemas.text import UnicodeText

MAX_JSON_DEPTH = MAX_DEPTH
MAX_INT_DIGITS = STRICT_MAX_INT_DIGITS
BODY_BYTES_PER_CHAR = 12
"""Worst case JSON bytes of one character of text: an astral character sent as two ``\\uXXXX`` escapes."""
BODY_BYTES_PER_DOCUMENT = 256
"""Room per document for its JSON punctuation and a ``{"text": ...}`` wrapper with a few extra fields."""
BODY_BYTES_SLACK = 64 * 1024
"""Room for the other fields of a request (top_n, model, extras peer clients send)."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# -- requests --------------------------------------------------------------------------------------


class ScoringOptions(_Lenient):
    """What every scoring route accepts besides its texts: the instruction and long-document handling."""

    instruction: UnicodeText | None = Field(
        None, description="Task instruction (Qwen3 rerankers); the model's default when absent."
    )
    truncation_direction: Annotated[TruncationDirection, BeforeValidator(_lower)] | None = Field(
        None,
        description='Which end of a too-long document is kept: "right" cuts the end (default), "left" the start. '
        'TEI\'s "Left"/"Right" are accepted.',
    )
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="Read at most this many tokens of each document (the rest is ignored)."
    )
    long_documents: LongDocuments | None = Field(
        None,
        description='A document beyond the model window: "truncate" scores its first window, "chunk" scores '
        "overlapping windows and keeps the best (the result names it in `chunk`). Default: truncate.",
    )

    def score_request(self, query: str, documents: list[str], instruction: str, *, raw: bool) -> ScoreRequest:
        """The scoring core's request; an option left out keeps ScoreRequest's default."""
        options: dict[str, Any] = {
            "truncation_direction": self.truncation_direction,
            "max_tokens_per_doc": self.max_tokens_per_doc,
            "long_documents": self.long_documents,
        }
        return ScoreRequest(
            query=query,
            documents=documents,
            instruction=instruction,
            raw_scores=raw,
            **{k: v for k, v in options.items() if v is not None},
        )


class DocumentObject(_Lenient):
    text: UnicodeText


class RerankRequest(ScoringOptions):
    """``POST /v1/rerank``, ``/v2/rerank`` (and ``/rerank`` with ``documents``): Cohere v1/v2, Jina, vLLM."""

    query: UnicodeText
    documents: list[UnicodeText | DocumentObject] = Field(min_length=1, description="Strings or {text} objects.")
    top_n: int | None = Field(None, ge=1, description="Return only the best n (all when absent).")
    return_documents: bool = Field(False, description="Echo each document's text in the results.")
    model: UnicodeText | None = Field(
        None, description="Served model id or an alias from GET /v1/models; another value answers 404."
    )

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class TeiRerankRequest(ScoringOptions):
    """``POST /rerank`` (text-embeddings-inference)."""

    query: UnicodeText
    texts: list[UnicodeText] = Field(min_length=1)
    raw_scores: bool = Field(False, description="Logits instead of [0, 1] scores (bypasses the cache).")
    return_text: bool = False
    truncate: bool = Field(
        True, description="False: a text longer than the model's window answers 413 (unless long_documents=chunk)."
    )


def _rerank_body_kind(value: Any) -> str:
    """TEI unless the body has Cohere's ``documents`` and no ``texts`` (what LiteLLM posts to /rerank)."""
    if isinstance(value, dict):
        return "cohere" if "documents" in value and "texts" not in value else "tei"
    return "cohere" if isinstance(value, RerankRequest) else "tei"


AnyRerankRequest = Annotated[
    Annotated[TeiRerankRequest, Tag("tei")] | Annotated[RerankRequest, Tag("cohere")],
    Discriminator(_rerank_body_kind),
]
"""The body of ``POST /rerank``: TEI's, or a Cohere-shaped one."""


class PairScoreRequest(ScoringOptions):
    """``POST /score`` (vLLM): ``text_1`` (the query) against ``text_2``: 1:1, 1:N, or N:N pairs."""

    text_1: UnicodeText | Annotated[list[UnicodeText], Field(min_length=1)]
    text_2: UnicodeText | Annotated[list[UnicodeText], Field(min_length=1)]
    model: UnicodeText | None = Field(None, description="Served model id or an alias; another value answers 404.")

    @model_validator(mode="after")
    def _lengths(self) -> PairScoreRequest:
        n1, n2 = len(self.queries()), len(self.documents())
        if n1 != 1 and n1 != n2:
            raise ValueError(f"text_1 has {n1} texts and text_2 {n2}: lengths must be 1:1, 1:N or N:N")
        return self

    def queries(self) -> list[str]:
        return [self.text_1] if isinstance(self.text_1, str) else self.text_1

    def documents(self) -> list[str]:
        return [self.text_2] if isinstance(self.text_2, str) else self.text_2

    def pairs(self) -> list[tuple[str, str]]:
        """(query, document) of each result, in input order."""
        queries, documents = self.queries(), self.documents()
        return [(queries[0] if len(queries) == 1 else queries[i], d) for i, d in enumerate(documents)]


# -- responses -------------------------------------------------------------------------------------


class RerankResultItem(BaseModel):
    index: int
    relevance_score: float
    document: DocumentObject | None = None
    chunk: int | None = Field(None, description="long_documents=chunk: the index of the best-scoring window.")


class Usage(BaseModel):
    """Token usage as vLLM and Jina report it, plus where the scores came from."""

    prompt_tokens: int = Field(
        description="Tokens of the texts scored: instruction and query once per document, plus the document."
    )
    total_tokens: int = Field(description="Equal to prompt_tokens (a reranker generates nothing).")
    documents: int = Field(description="Documents scored for this request.")
    cached_documents: int = Field(description="Of those, served from the Redis score cache.")


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = 1


class MetaTokens(BaseModel):
    input_tokens: int
    output_tokens: int = 0


class ApiMeta(BaseModel):
    """Cohere's ``meta``, as its SDK parses it."""

    api_version: ApiVersion
    billed_units: BilledUnits = BilledUnits()
    tokens: MetaTokens
    warnings: list[str] | None = None


class RerankResponse(BaseModel):
    id: str = Field(description="The request id (X-Request-Id when the client sent one).")
    model: str
    results: list[RerankResultItem] = Field(description="Best first.")
    meta: ApiMeta
    usage: Usage


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None
    chunk: int | None = Field(None, description="long_documents=chunk: the index of the best-scoring window.")


class ScoreData(BaseModel):
    index: int
    object: Literal["score"] = "score"
    score: float


class ScoreResponse(BaseModel):
    """vLLM's ``/score`` answer: one score per ``text_2`` (or pair), in input order."""

    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rerank-stream"
    root: str = Field(description="The served model this name resolves to.")


class ModelList(BaseModel):
    """OpenAI's model list: the served model first, then its aliases (model.allowed_models)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "list",
                    "data": [
                        {
                            "id": "Qwen/Qwen3-Reranker-0.6B",
                            "object": "model",
                            "created": 1767225600,
                            "owned_by": "rerank-stream",
                            "root": "Qwen/Qwen3-Reranker-0.6B",
                        }
                    ],
                }
            ]
        }
    )

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ServiceInfo(BaseModel):
    """``GET /info``: what is served and how."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "Qwen/Qwen3-Reranker-0.6B",
                    "kind": "qwen3-reranker",
                    "revision": None,
                    "max_length": 8192,
                    "device": "cuda:0",
                    "dtype": "bfloat16",
                    "fallback": False,
                    "version": "0.1.0",
                }
            ]
        }
    )

    model: str
    kind: str
    revision: str | None
    max_length: int
    device: str
    dtype: str
    fallback: bool = Field(description="True when the packaged fallback model serves instead of the configured one.")
    version: str = Field(description="rerank-stream version.")


class ErrorBody(BaseModel):
    """Every error response: a reason a client can act on, never a stack trace."""

    error: str
    limit: str | None = Field(None, description="Settings key of the exceeded limit, for 413.")
    detail: Any = None


# -- request examples (OpenAPI, /docs) ---------------------------------------------------------------

_DOCS = ["Bananas are yellow fruit.", "The sky is blue.", "Lemons are yellow and sour."]


def _example(summary: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "value": value}


COHERE_BODY_EXAMPLES: dict[str, dict[str, Any]] = {
    "cohere_v2": _example(
        "Cohere v2 (ClientV2.rerank)",
        {"model": "Qwen/Qwen3-Reranker-0.6B", "query": "which fruit is yellow", "documents": _DOCS, "top_n": 2},
    ),
    "cohere_v1": _example(
        "Cohere v1 / Jina, {text} documents echoed back",
        {
            "query": "which fruit is yellow",
            "documents": [{"text": d} for d in _DOCS],
            "top_n": 2,
            "return_documents": True,
        },
    ),
    "instruction_chunk": _example(
        "Moderation: an instruction, long documents scored in overlapping windows",
        {
            "query": "threats of violence",
            "documents": ["A long forum post ...", "Another comment ..."],
            "instruction": "Judge whether the text violates the policy",
            "long_documents": "chunk",
        },
    ),
}
TEI_BODY_EXAMPLES: dict[str, dict[str, Any]] = {
    "tei": _example(
        "text-embeddings-inference",
        {"query": "which fruit is yellow", "texts": _DOCS, "return_text": True, "truncation_direction": "Right"},
    ),
    "cohere": _example(
        "Cohere-shaped (LiteLLM posts this to /rerank): answered in the Cohere shape",
        {"model": "Qwen/Qwen3-Reranker-0.6B", "query": "which fruit is yellow", "documents": _DOCS, "top_n": 1},
    ),
}
SCORE_BODY_EXAMPLES: dict[str, dict[str, Any]] = {
    "one_to_many": _example("vLLM: one query, many documents", {"text_1": "which fruit is yellow", "text_2": _DOCS}),
    "pairs": _example(
        "vLLM: N:N pairs",
        {"text_1": ["which fruit is yellow", "what colour is the sky"], "text_2": _DOCS[:2]},
    ),
}


# -- the request body, before the models ---------------------------------------------------------


class BodyRejected(ValueError):
    """A request body refused before schema validation: HTTP status, reason, and where (``detail``)."""

    def __init__(self, status: int, reason: str, *, limit: str | None = None, detail: Any = None):
        super().__init__(reason)
        self.status, self.reason, self.limit, self.detail = status, reason, limit, detail


def max_body_bytes(limits: LimitsSettings) -> tuple[int, str]:
    """Largest body a request within the character/token limits can need, and the limit that bounds it.

    Documents hold at most ``max_documents * max_document_chars`` characters, and at most about
    ``3 * max_total_tokens`` (``estimate_tokens`` counts one token per 3 characters), whichever is less.
    Every character is priced at its worst JSON encoding, so a request that passes the limits always fits.
    """
    by_docs = limits.max_documents * limits.max_document_chars
    by_tokens = 3 * limits.max_total_tokens + 2 * limits.max_documents
    if by_docs <= by_tokens:
        doc_chars, key = by_docs, "limits.max_document_chars"
    else:
        doc_chars, key = by_tokens, "limits.max_total_tokens"
    chars = doc_chars + 2 * limits.max_query_chars
    return BODY_BYTES_PER_CHAR * chars + BODY_BYTES_PER_DOCUMENT * limits.max_documents + BODY_BYTES_SLACK, key


def decode_json_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or ``BodyRejected`` (400 not JSON, 422 valid JSON of the wrong kind).

    The caller bounds ``len(raw)`` first; the policy is ``schemas/strict_json.py``, the Kafka door's too.
    Nothing is altered: a lone surrogate is refused with its path and character position, never replaced.
    """
    if not raw:
        raise BodyRejected(400, "empty request body; send a JSON object")
    try:
        return loads_object(raw, max_depth=MAX_JSON_DEPTH, max_int_digits=MAX_INT_DIGITS)
    except StrictJsonError as exc:
        if exc.kind == "encoding":
            raise BodyRejected(400, f"request body is {exc.reason}", detail=exc.detail) from None
        if exc.kind == "syntax":
            raise BodyRejected(400, f"malformed JSON body: {exc.reason}", detail=exc.detail) from None
        if exc.kind == "too_deep":
            raise BodyRejected(400, exc.reason) from None
        if exc.kind == "not_object":
            raise BodyRejected(
                422, f"request body must be a JSON object, got {exc.reason.rsplit(' ', 1)[-1]}"
            ) from None
        raise BodyRejected(422, exc.reason, detail=exc.detail) from None
