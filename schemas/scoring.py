"""Scoring contracts between the doors (Kafka worker, HTTP API) and the model replicas.

Pure data (dataclasses, no pydantic, no torch): they cross the Ray handle by pickling, and the
worker builds them without importing the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


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
    # Long documents (see docs/architecture.md): which end survives a cut, an optional cap on each
    # document's tokens, and "truncate" (one window) or "chunk" (max over overlapping windows).
    truncation_direction: str = "right"
    max_tokens_per_doc: int | None = None
    long_documents: str = "truncate"


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
