"""HTTP wire contracts of the rerank API: the Cohere/Jina/vLLM shape and the TEI shape, and the
strict decoding of a request body that comes before them.

Both shapes are served by the same handler; these models only describe what goes in and out.
Unknown request fields are ignored (peer clients send extras such as ``max_chunks_per_doc``).

``decode_json_body`` is the HTTP door's input boundary, the same policy as the Kafka door's decoder:
nesting bounded before parsing, UTF-8 only, no NaN/Infinity, no integers wider than
``MAX_INT_DIGITS``, no duplicate keys, a top-level object, and no lone surrogates anywhere (the
caller bounds the size with ``max_body_bytes``). Each rejection is a ``BodyRejected`` with an HTTP
status and a reason that says where.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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


class DocumentObject(_Lenient):
    text: UnicodeText


class RerankRequest(_Lenient):
    """``POST /v1/rerank`` (Cohere v2 / Jina / vLLM)."""

    query: UnicodeText
    documents: list[UnicodeText | DocumentObject] = Field(min_length=1)
    top_n: int | None = Field(None, ge=1, description="Return only the best n (all when absent).")
    return_documents: bool = Field(False, description="Echo each document's text in the results.")
    model: UnicodeText | None = Field(None, description="Served model id; another value answers 404.")
    instruction: UnicodeText | None = Field(
        None, description="Task instruction (Qwen3 rerankers); model default when absent."
    )

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResultItem(BaseModel):
    index: int
    relevance_score: float
    document: DocumentObject | None = None


class Usage(BaseModel):
    documents: int = Field(description="Documents scored for this request.")
    cached_documents: int = Field(description="Of those, served from the Redis score cache.")


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResultItem]
    usage: Usage


class TeiRerankRequest(_Lenient):
    """``POST /rerank`` (text-embeddings-inference)."""

    query: UnicodeText
    texts: list[UnicodeText] = Field(min_length=1)
    raw_scores: bool = Field(False, description="Logits instead of [0, 1] scores (bypasses the cache).")
    return_text: bool = False
    truncate: bool = Field(True, description="False: a text longer than the model's max length answers 413.")
    instruction: UnicodeText | None = None


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class ErrorBody(BaseModel):
    """Every error response: a reason a client can act on, never a stack trace."""

    error: str
    limit: str | None = Field(None, description="Settings key of the exceeded limit, for 413.")
    detail: Any = None


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
