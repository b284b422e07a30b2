"""Turn a Kafka record's bytes into a valid RerankJob, or say precisely why not.

Every rejection carries an ErrorKind and a human-readable reason, which become a dead letter:
bad input is reported, never crashes the worker and is never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from schemas.limits import check_limits
from schemas.messages import ErrorKind, RerankJob, now_ms
from schemas.settings import Settings


@dataclass(frozen=True)
class Rejection:
    kind: ErrorKind
    reason: str
    job_id: str | None = None


def _job_id_of(obj: object) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get("job_id"), str):
        return obj["job_id"][:256]
    return None


def decode_job(raw: bytes | None, topic: str, settings: Settings, served_model: str | None = None) -> RerankJob | Rejection:
    """Parse and validate one job; ``served_model`` is the model id the worker scores with."""
    limits = settings.limits
    if raw is None:
        return Rejection(ErrorKind.undecodable, "empty record (null value)")
    if len(raw) > limits.max_message_bytes:
        return Rejection(ErrorKind.too_large, f"message is {len(raw)} bytes, limit {limits.max_message_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(ErrorKind.undecodable, f"not UTF-8: {exc}")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return Rejection(ErrorKind.invalid_json, f"invalid JSON: {exc}")
    job_id = _job_id_of(obj)
    try:
        job = RerankJob.model_validate(obj)
    except ValidationError as exc:
        errors = exc.errors()
        if any("duplicate candidate ids" in str(e.get("msg", "")) for e in errors):
            return Rejection(ErrorKind.duplicate_ids, "; ".join(str(e["msg"]) for e in errors), job_id)
        reason = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:5])
        return Rejection(ErrorKind.schema_violation, reason, job_id)

    feeds = settings.kafka.feeds
    if job.feed not in feeds:
        return Rejection(ErrorKind.unknown_feed, f"unknown feed {job.feed!r}; configured: {sorted(feeds)}", job.job_id)
    expected = settings.kafka.feed_for_topic(topic)
    if expected is not None and expected != job.feed:
        return Rejection(ErrorKind.unknown_feed, f"feed {job.feed!r} sent to topic {topic!r} of feed {expected!r}", job.job_id)
    if job.model is not None:
        allowed = settings.model.allowed_names(served_model)
        if job.model not in allowed:
            return Rejection(ErrorKind.unknown_model, f"model {job.model!r} not served; allowed: {sorted(allowed)}", job.job_id)
    violation = check_limits(
        limits, job.query, job.instruction or "", [c.text for c in job.candidates], [c.id for c in job.candidates]
    )
    if violation is not None:
        return Rejection(ErrorKind.too_large, f"{violation.message} ({violation.limit})", job.job_id)
    if deadline_passed(job):
        return Rejection(ErrorKind.deadline_expired, f"deadline of {job.deadline_ms} ms after created_at passed", job.job_id)
    return job


def deadline_passed(job: RerankJob, at_ms: int | None = None) -> bool:
    return job.deadline_ms is not None and (now_ms() if at_ms is None else at_ms) > job.created_at + job.deadline_ms
