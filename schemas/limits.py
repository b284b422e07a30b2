"""Request size limits, checked the same way for Kafka jobs (dead letter) and HTTP requests (413).

Token counts are estimated without a tokenizer (about 1 token per 3 characters), so the check
is cheap enough to run on every message before any model work; the engine still truncates
each document to the model's max length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.settings import LimitsSettings


@dataclass(frozen=True)
class LimitViolation:
    """Which limit (its settings key) was exceeded, and a message a client can act on."""

    limit: str
    message: str


def estimate_tokens(text: str) -> int:
    """Cheap upper-ish bound of tokens (about 1 per 3 characters)."""
    return len(text) // 3 + 1


def check_limits(
    limits: LimitsSettings,
    query: str,
    instruction: str,
    documents: Sequence[str],
    doc_names: Sequence[str] | None = None,
) -> LimitViolation | None:
    """First limit the request breaks, or None. ``doc_names`` name documents in messages (ids)."""
    if len(documents) > limits.max_documents:
        return LimitViolation("limits.max_documents", f"{len(documents)} documents, limit {limits.max_documents}")
    for name, value in (("query", query), ("instruction", instruction)):
        if len(value) > limits.max_query_chars:
            return LimitViolation(
                "limits.max_query_chars", f"{name} has {len(value)} characters, limit {limits.max_query_chars}"
            )
    prefix_tokens = estimate_tokens(query) + estimate_tokens(instruction)
    total_tokens = 0
    for i, text in enumerate(documents):
        if len(text) > limits.max_document_chars:
            name = repr(doc_names[i]) if doc_names is not None else f"#{i}"
            return LimitViolation(
                "limits.max_document_chars",
                f"document {name} has {len(text)} characters, limit {limits.max_document_chars}",
            )
        total_tokens += prefix_tokens + estimate_tokens(text)
    if total_tokens > limits.max_total_tokens:
        return LimitViolation(
            "limits.max_total_tokens", f"about {total_tokens} tokens, limit {limits.max_total_tokens}"
        )
    return None
