"""HTTP wire contracts of the rerank API: the Cohere/Jina/vLLM shape and the TEI shape, and the
strict decoding of a request body that comes before them.

Both shapes are served by the same handler; these models only describe what goes in and out.
Unknown request fields are ignored (peer clients send extras such as ``max_chunks_per_doc``).

``decode_json_body`` is the HTTP door's input boundary, the same policy as the Kafka door's decoder:
bounded size and nesting (checked before parsing), UTF-8 only, no NaN/Infinity, no integers wider
than ``MAX_INT_DIGITS``, no duplicate keys, a top-level object, and no lone surrogates anywhere. Each
rejection is a ``BodyRejected`` with an HTTP status and a reason that says where.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from itertools import accumulate
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.settings import LimitsSettings
from schemas.text import UnicodeText, find_invalid_json_text

MAX_JSON_DEPTH = 64
"""Deepest nesting of a request body; the rerank shapes need 3 (object, documents, document object)."""
MAX_INT_DIGITS = 100
"""Longest integer literal accepted (Python itself refuses more than 4300 digits, with a ValueError)."""
BODY_BYTES_PER_CHAR = 12
"""Worst case JSON bytes of one character of text: an astral character sent as two ``\\uXXXX`` escapes."""
BODY_BYTES_PER_DOCUMENT = 256
BODY_BYTES_SLACK = 64 * 1024


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


_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# A string literal (or an unterminated one running to the end): brackets inside it are not nesting.
_STRING_LITERAL = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_ALL_BUT_BRACKETS = re.compile(r"[^\[\]{}]+")
_NESTING_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# A lone surrogate can only come from a \uD800..\uDFFF escape: encoded ones are not UTF-8 at all.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


def nesting_depth(text: str, limit: int) -> int | None:
    """How deep JSON ``text`` nests when that is more than ``limit``, else None; never recurses.

    Counting brackets bounds the depth from above, so small bodies skip the scan; otherwise string
    literals are blanked and the running bracket balance is taken, all in C loops. Unclosed brackets
    count: the parser would recurse into them before finding the error.
    """
    if text.count("[") + text.count("{") <= limit:
        return None
    brackets = _ALL_BUT_BRACKETS.sub("", _STRING_LITERAL.sub("", text))
    depth = max(accumulate(map(_NESTING_STEP.__getitem__, brackets)), default=0)
    return depth if depth > limit else None


class _Refused(ValueError):
    """Raised by the json.loads hooks for JSON that Python accepts but this door does not."""


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Refused(f"number {literal[:40]} is out of range of a double")
    return value


def _bounded_int(literal: str) -> int:
    digits = len(literal) - literal.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"integer of {digits} digits, limit {MAX_INT_DIGITS}")
    return int(literal)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Refused(f"duplicate key {ascii(twice[:64])} (parsers disagree which one wins)")
    return obj


def decode_json_body(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or ``BodyRejected`` (400 not JSON, 422 valid JSON of the wrong kind).

    The caller bounds ``len(raw)`` first. Nothing is altered: a lone surrogate is refused with its
    path and character position, never replaced.
    """
    if not raw:
        raise BodyRejected(400, "empty request body; send a JSON object")
    if raw.startswith(codecs.BOM_UTF8):  # RFC 8259 lets a parser ignore it (and json.loads(bytes) does)
        raw = raw[len(codecs.BOM_UTF8) :]
    elif raw.startswith(_UTF16_32_BOMS):
        raise BodyRejected(400, "request body starts with a UTF-16/UTF-32 byte order mark; JSON must be UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRejected(
            400, f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}", detail={"byte": exc.start}
        ) from None
    depth = nesting_depth(text, MAX_JSON_DEPTH)
    if depth is not None:
        raise BodyRejected(400, f"JSON nested {depth} levels deep, limit {MAX_JSON_DEPTH}")
    try:
        value = json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        where = {"line": exc.lineno, "column": exc.colno, "position": exc.pos}
        raise BodyRejected(400, f"malformed JSON body: {exc}", detail=where) from None
    except _Refused as exc:
        raise BodyRejected(400, f"malformed JSON body: {exc}") from None
    except RecursionError:  # unreachable after the depth scan; kept so nesting can never become a 500
        raise BodyRejected(400, f"JSON nested too deep to parse, limit {MAX_JSON_DEPTH}") from None
    if not isinstance(value, dict):
        kind = "null" if value is None else _JSON_TYPE.get(type(value), type(value).__name__)
        raise BodyRejected(422, f"request body must be a JSON object, got {kind}")
    if _SURROGATE_ESCAPE.search(text):
        issue = find_invalid_json_text(value)
        if issue is not None:
            where = {"field": issue.field, "position": issue.position, "codepoint": f"U+{issue.codepoint:04X}"}
            raise BodyRejected(422, issue.reason, detail=where)
    return value
