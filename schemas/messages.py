"""Kafka wire contracts: the job that comes in, the result and the dead letter that go out.

Every process (worker, load generator, demo, tests) reads and writes these models only, so a
field added here is a field everyone agrees on. Exported as JSON Schema into ``docs/schemas``.
"""

from __future__ import annotations

import base64
import time
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.scoring import LongDocuments, TruncationDirection
from schemas.text import UnicodeText, find_invalid_json_text

SCHEMA_VERSION = 1
INT64_MAX = 2**63 - 1
REDRIVE_COUNT_HEADER = "rerank-redrive-count"
"""Kafka header of a job replayed from the DLQ: how many times it has been replayed (ASCII digits)."""
REDRIVE_FROM_HEADER = "rerank-redrive-from"
"""Kafka header of a replayed job: topic/partition/offset of the dead letter it was replayed from."""


def now_ms() -> int:
    return int(time.time() * 1000)


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candidate(WireModel):
    id: UnicodeText = Field(
        min_length=1, max_length=256, description="Caller's id of the candidate, unique within the job."
    )
    text: UnicodeText = Field(description="Text to score against the query.")
    metadata: dict[str, Any] | None = Field(None, description="Opaque; not used for scoring, not echoed.")

    @field_validator("metadata")
    @classmethod
    def _metadata_is_unicode(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Opaque, but still re-serialized (logs, dead letters): its strings must encode as UTF-8 too."""
        issue = find_invalid_json_text(value, "metadata") if value else None
        if issue is not None:
            raise ValueError(issue.reason)
        return value


class RerankJob(WireModel):
    """A ranking job: score every candidate against the query (or policy)."""

    schema_version: Literal[1] = 1
    job_id: UnicodeText = Field(min_length=1, max_length=256, description="Unique per job; the result's Kafka key.")
    feed: UnicodeText = Field(min_length=1, description="recommendation, moderation, or a configured feed name.")
    query: UnicodeText = Field(description="Query, user interest or moderation policy.")
    instruction: UnicodeText | None = Field(None, description="Task instruction; the feed's default when absent.")
    candidates: list[Candidate] = Field(min_length=1)
    top_k: int | None = Field(None, ge=1, description="Return only the best k candidates (all when absent).")
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Candidates scoring >= threshold are listed as flagged."
    )
    model: UnicodeText | None = Field(
        None, description="Requested model; must be the served one or in the allowed list."
    )
    created_at: int = Field(
        default_factory=now_ms, ge=0, le=INT64_MAX, description="Producer time, epoch milliseconds."
    )
    deadline_ms: int | None = Field(
        None,
        ge=1,
        le=INT64_MAX,
        description="Relative deadline: a job still unscored created_at + deadline_ms is dead-lettered.",
    )
    long_documents: LongDocuments | None = Field(
        None,
        description=(
            "A candidate longer than the model's window: 'truncate' scores one window, 'chunk' scores overlapping "
            "windows and keeps the best (the result names it). The feed's long_documents when absent."
        ),
    )
    truncation_direction: TruncationDirection = Field(
        "right", description="Which end of a too-long candidate is read: 'right' keeps the start, 'left' the end."
    )
    max_tokens_per_doc: int | None = Field(
        None,
        ge=1,
        le=INT64_MAX,
        strict=True,  # a JSON integer: true, 3.0 or "3" are mistakes, not caps
        description="Read at most this many tokens of each candidate (in either mode).",
    )

    @model_validator(mode="after")
    def _unique_candidate_ids(self) -> RerankJob:
        ids = [c.id for c in self.candidates]
        dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
        if dupes:
            shown = ", ".join(dupes[:5]) + (" ..." if len(dupes) > 5 else "")
            raise ValueError(f"duplicate candidate ids: {shown}")
        return self


class RankedCandidate(WireModel):
    id: str
    score: float
    rank: int = Field(ge=1)
    chunk: int | None = Field(
        None,
        ge=0,
        exclude_if=lambda v: v is None,
        description="Chunk mode only (absent otherwise): index of the candidate's best-scoring window, 0 = its start.",
    )


class ModelRef(WireModel):
    id: str
    revision: str | None = None
    kind: str


class Timings(WireModel):
    queue_wait_ms: float = Field(description="created_at until the worker picked the job up.")
    cache_ms: float = Field(description="Cache lookup and fill.")
    model_ms: float = Field(description="Scoring of the cache misses (0 when all were cached).")
    total_ms: float = Field(description="created_at until the result was handed to the producer.")


class RerankResult(WireModel):
    schema_version: Literal[1] = 1
    job_id: str
    feed: str
    model: ModelRef
    ranked: list[RankedCandidate] = Field(description="Best first; top_k long when top_k was given.")
    flagged: list[str] = Field(default_factory=list, description="Candidate ids scoring >= threshold, best first.")
    cached: int = Field(ge=0, description="Candidates whose score came from the cache.")
    timings: Timings
    worker_id: str
    produced_at: int = Field(default_factory=now_ms)


class ErrorKind(str, Enum):
    """Why a job was dead-lettered (also the kind label of the dead-letter metric)."""

    undecodable = "undecodable"  # null value, not UTF-8, or a UTF-16/32 byte order mark
    invalid_json = "invalid_json"  # not JSON, NaN/Infinity, numbers out of range, duplicate keys
    too_deep = "too_deep"  # JSON nested deeper than the decoder's max_depth (checked before parsing)
    invalid_text = "invalid_text"  # a string that is not valid Unicode (lone UTF-16 surrogate)
    schema_violation = "schema_violation"
    too_large = "too_large"
    duplicate_ids = "duplicate_ids"
    unknown_feed = "unknown_feed"
    unknown_model = "unknown_model"
    deadline_expired = "deadline_expired"
    scoring_failed = "scoring_failed"
    internal_error = "internal_error"  # a bug: an unexpected exception while decoding, never a crash


class DeadLetter(WireModel):
    schema_version: Literal[1] = 1
    payload_b64: str = Field(
        description="The original message value, base64; only its first bytes when payload_truncated is true."
    )
    payload_size: int | None = Field(None, ge=0, description="Byte length of the original message value.")
    payload_sha256: str | None = Field(
        None, description="Hex SHA-256 of the whole original message value (also when truncated)."
    )
    payload_truncated: bool = Field(
        False, description="payload_b64 holds only a prefix, so the dead letter fits the producer's size limit."
    )
    job_id: str | None = Field(None, description="When it could be read from the payload.")
    source_topic: str
    source_partition: int
    source_offset: int
    error_kind: ErrorKind
    reason: str = Field(description="Human-readable cause.")
    worker_id: str
    produced_at: int = Field(default_factory=now_ms)
    redrive_count: int = Field(
        0,
        ge=0,
        description=(
            "How often the payload had been replayed from the DLQ (`rerank-stream dlq replay`) before this failure; "
            "> 0 = a replay failed again and is not replayed again unless forced."
        ),
    )
    redrive_from: str | None = Field(
        None, description="DLQ coordinates topic/partition/offset of the dead letter the failed replay came from."
    )

    @staticmethod
    def encode_payload(raw: bytes | None) -> str:
        return base64.b64encode(raw or b"").decode("ascii")

    def payload(self) -> bytes:
        """The payload bytes carried (a prefix of the original when ``payload_truncated``)."""
        return base64.b64decode(self.payload_b64)


WIRE_MODELS: dict[str, type[BaseModel]] = {
    "rerank_job": RerankJob,
    "rerank_result": RerankResult,
    "dead_letter": DeadLetter,
}
