"""Scoring contracts between the doors (Kafka worker, HTTP API) and the model replicas.

Pure data (dataclasses, no pydantic, no torch): they cross the Ray handle by pickling, and the
worker builds them without importing the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

TruncationDirection = Literal["left", "right"]
"""Which end of a too-long document survives a cut: "right" keeps the start, "left" keeps the end."""
LongDocuments = Literal["truncate", "chunk"]
"""A document beyond the model's window is cut to one window, or split into overlapping windows (max wins)."""
TRUNCATION_DIRECTIONS: tuple[str, ...] = get_args(TruncationDirection)
LONG_DOCUMENT_MODES: tuple[str, ...] = get_args(LongDocuments)


@dataclass(frozen=True)
class ScoreRequest:
    """One job: a query, its documents and an optional task instruction.

    instruction=None means the model kind's documented default (Qwen3: the web-search
    instruction; the other kinds take no instruction). raw_scores=True returns logits
    (qwen3: logit_yes - logit_no; seq-cls: the logit; bi-encoder: the cosine) instead of [0, 1] scores.
    """

    query: str
    documents: Sequence[str]
    instruction: str | None = None
    raw_scores: bool = False
    # Long documents (serve_app/engine/long_documents.py): which end survives a cut, an optional cap on
    # each document's tokens (the rest is never read, in either mode), and "truncate" (one window) or
    # "chunk" (overlapping windows under the same prefix, the document's score = the best window's).
    truncation_direction: TruncationDirection = "right"
    max_tokens_per_doc: int | None = None
    long_documents: LongDocuments = "truncate"
    # Higher is scored first when a replica is saturated (serve_app/priority_batching.py): the feed's
    # kafka.feeds.<feed>.priority on the Kafka side. Not part of the cache key.
    priority: int = 0

    def __post_init__(self) -> None:
        if self.truncation_direction not in TRUNCATION_DIRECTIONS:
            raise ValueError(
                f"truncation_direction must be one of {TRUNCATION_DIRECTIONS}, not {self.truncation_direction!r}"
            )
        if self.long_documents not in LONG_DOCUMENT_MODES:
            raise ValueError(f"long_documents must be one of {LONG_DOCUMENT_MODES}, not {self.long_documents!r}")
        cap = self.max_tokens_per_doc
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"max_tokens_per_doc must be a positive integer or None, not {cap!r}")

    @property
    def plain(self) -> bool:
        """True for the default handling (truncate, keep the start, no cap): the engine's fast path."""
        return (
            self.long_documents == "truncate"
            and self.truncation_direction == "right"
            and self.max_tokens_per_doc is None
        )


@dataclass(frozen=True)
class ChunkedScores:
    """A chunk-mode answer: each document's score (the max over its windows) and the index of that window.

    Truncate mode answers a plain ``list[float]`` (its payload is unchanged); a document that fits one
    window has window 0. Ties go to the earliest window.
    """

    scores: list[float]
    chunks: list[int]


ScoreResult = list[float] | ChunkedScores
"""What the engine, the Reranker deployment and a ScoreClient return for one ScoreRequest."""


@dataclass(frozen=True)
class ModelInfo:
    """What is being served; `fingerprint` goes into cache keys so scores of different models never mix."""

    id: str
    revision: str | None
    kind: str
    device: str
    dtype: str
    max_length: int
    fallback: bool

    @property
    def fingerprint(self) -> str:
        return f"{self.id}@{self.revision or 'local'}#{self.kind}"
