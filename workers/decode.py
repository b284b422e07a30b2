"""Turn a Kafka record's bytes into a valid RerankJob, or say precisely why not.

Every rejection carries an ErrorKind and a human-readable reason, which become a dead letter:
bad input is reported, never crashes the worker and is never silently dropped. ``decode_job`` is
total: whatever the bytes, it returns a RerankJob or a Rejection and never raises.

Policy for JSON that is valid but awkward (all rejected before any model work; the JSON part is
``schemas/strict_json.py``, shared with the HTTP door):

- size: ``settings.limits.max_message_bytes``, checked on the raw bytes (``too_large``);
- nesting deeper than ``max_depth`` (64): ``too_deep``, found by a linear pre-scan *before* json.loads,
  so the parser's recursion is bounded (10,000 levels used to raise RecursionError);
- a UTF-8 BOM is skipped (RFC 8259 lets parsers ignore it); a UTF-16/32 BOM is ``undecodable``;
- NaN / Infinity / -Infinity literals, numbers that overflow a double (``1e400``), integers longer than
  ``max_int_digits`` (Python raises ValueError past 4300 digits) and duplicate object keys (parsers
  disagree on which one wins) are ``invalid_json``;
- a top level that is not an object is a ``schema_violation``;
- lone UTF-16 surrogates (``"\\ud800"``) in any string, keys included, are ``invalid_text`` with the
  path and character position, e.g. ``candidates[3].text``; NUL characters are valid text and kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from schemas.limits import check_limits
from schemas.messages import ErrorKind, RerankJob, now_ms
from schemas.settings import Settings
from schemas.strict_json import MAX_DEPTH, MAX_INT_DIGITS, StrictJsonError, loads_object
from schemas.text import lone_surrogate_at

DEFAULT_MAX_DEPTH = MAX_DEPTH
DEFAULT_MAX_INT_DIGITS = MAX_INT_DIGITS
_KIND_OF = {
    "encoding": ErrorKind.undecodable,
    "too_deep": ErrorKind.too_deep,
    "syntax": ErrorKind.invalid_json,
    "not_object": ErrorKind.schema_violation,
    "invalid_text": ErrorKind.invalid_text,
}
MAX_REASON_CHARS = 2000
"""Rejection reasons are cut here: they may quote input, and dead letters must stay small."""


@dataclass(frozen=True)
class Rejection:
    kind: ErrorKind
    reason: str
    job_id: str | None = None


def _reject(kind: ErrorKind, reason: str, job_id: str | None = None) -> Rejection:
    """A Rejection whose reason is short and always encodable as UTF-8 (it may quote the input)."""
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 20] + f" ... [{len(reason)} chars]"
    if lone_surrogate_at(reason) is not None:
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8")
    return Rejection(kind, reason, job_id)


def _show(value: object, limit: int = 80) -> str:
    """repr() of a value from the input, cut to ``limit`` characters (repr escapes surrogates)."""
    text = repr(value[: limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _job_id_of(obj: object) -> str | None:
    """The job id when the payload has a usable one: it becomes the dead letter's Kafka key."""
    if isinstance(obj, dict) and isinstance(obj.get("job_id"), str):
        job_id = obj["job_id"][:256]
        if job_id and lone_surrogate_at(job_id) is None:
            return job_id
    return None


def _plain(part: object) -> bool:
    return isinstance(part, int) or (isinstance(part, str) and part.isidentifier() and len(part) <= 64)


def _schema_rejection(exc: ValidationError, job_id: str | None) -> Rejection:
    errors = exc.errors()
    if any("duplicate candidate ids" in str(e.get("msg", "")) for e in errors):
        return _reject(ErrorKind.duplicate_ids, "; ".join(str(e["msg"]) for e in errors), job_id)
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) if _plain(p) else _show(p, 64) for p in e["loc"])
        parts.append(f"{loc or '<root>'}: {e['msg']}")
    if len(errors) > 5:
        parts.append(f"... {len(errors) - 5} more")
    return _reject(ErrorKind.schema_violation, "; ".join(parts), job_id)


def decode_job(
    raw: bytes | None,
    topic: str,
    settings: Settings,
    served_model: str | None = None,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_int_digits: int = DEFAULT_MAX_INT_DIGITS,
) -> RerankJob | Rejection:
    """Parse and validate one job; ``served_model`` is the model id the worker scores with.

    Never raises: an unexpected exception (a bug) becomes ``Rejection(ErrorKind.internal_error, ...)``
    so one message can never stop the partition.
    """
    try:
        return _decode(raw, topic, settings, served_model, max_depth, max_int_digits)
    except Exception as exc:  # noqa: BLE001 - the last resort that makes decoding total
        return internal_error(exc)


def internal_error(exc: BaseException, job_id: str | None = None) -> Rejection:
    """The rejection of a record whose handling raised unexpectedly (a bug): type and message, cut."""
    try:
        detail = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - even str(exc) may fail
        detail = type(exc).__name__
    return _reject(ErrorKind.internal_error, detail, job_id)


def _decode(
    raw: bytes | None, topic: str, settings: Settings, served_model: str | None, max_depth: int, max_int_digits: int
) -> RerankJob | Rejection:
    limits = settings.limits
    if raw is None:
        return _reject(ErrorKind.undecodable, "empty record (null value)")
    if not isinstance(raw, bytes | bytearray | memoryview):
        return _reject(ErrorKind.undecodable, f"record value is {type(raw).__name__}, expected bytes")
    raw = bytes(raw)
    if len(raw) > limits.max_message_bytes:
        return _reject(ErrorKind.too_large, f"message is {len(raw)} bytes, limit {limits.max_message_bytes}")
    try:
        obj = loads_object(raw, max_depth=max_depth, max_int_digits=max_int_digits)
    except StrictJsonError as exc:
        kind = _KIND_OF[exc.kind]
        if exc.kind == "syntax":
            return _reject(kind, f"invalid JSON: {exc.reason}")
        return _reject(kind, exc.reason, _job_id_of(exc.value))
    job_id = _job_id_of(obj)
    try:
        job = RerankJob.model_validate(obj)
    except ValidationError as exc:
        return _schema_rejection(exc, job_id)

    feeds = settings.kafka.feeds
    if job.feed not in feeds:
        reason = f"unknown feed {_show(job.feed)}; configured: {sorted(feeds)}"
        return _reject(ErrorKind.unknown_feed, reason, job.job_id)
    expected = settings.kafka.feed_for_topic(topic)
    if expected is not None and expected != job.feed:
        return _reject(
            ErrorKind.unknown_feed, f"feed {_show(job.feed)} sent to topic {topic!r} of feed {expected!r}", job.job_id
        )
    if job.model is not None and settings.model.resolve(job.model, served_model) is None:
        allowed = sorted(n for names in settings.model.names_by_model(served_model).values() for n in names)
        return _reject(ErrorKind.unknown_model, f"model {_show(job.model)} not served; allowed: {allowed}", job.job_id)
    violation = check_limits(
        limits, job.query, job.instruction or "", [c.text for c in job.candidates], [c.id for c in job.candidates]
    )
    if violation is not None:
        return _reject(ErrorKind.too_large, f"{violation.message} ({violation.limit})", job.job_id)
    if deadline_passed(job):
        return _reject(
            ErrorKind.deadline_expired, f"deadline of {job.deadline_ms} ms after created_at passed", job.job_id
        )
    return job


def deadline_passed(job: RerankJob) -> bool:
    """True when the job's relative deadline (created_at + deadline_ms) is already behind us."""
    return job.deadline_ms is not None and now_ms() > job.created_at + job.deadline_ms
