"""Turn a Kafka record's bytes into a valid RerankJob, or say precisely why not.

Every rejection carries an ErrorKind and a human-readable reason, which become a dead letter:
bad input is reported, never crashes the worker and is never silently dropped. ``decode_job`` is
total: whatever the bytes, it returns a RerankJob or a Rejection and never raises.

Policy for JSON that is valid but awkward (all rejected before any model work):

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

import codecs
import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from pydantic import ValidationError

from schemas.limits import check_limits
from schemas.messages import ErrorKind, RerankJob, now_ms
from schemas.settings import Settings
from schemas.text import find_invalid_json_text, lone_surrogate_at

DEFAULT_MAX_DEPTH = 64
"""Deepest JSON nesting accepted; a job needs 4 (object, candidates, candidate, metadata) plus metadata."""
DEFAULT_MAX_INT_DIGITS = 100
"""Longest integer literal accepted: wider than any fixed-size integer type (2**256 has 78 digits)."""
MAX_REASON_CHARS = 2000
"""Rejection reasons are cut here: they may quote input, and dead letters must stay small."""

_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# A JSON string, or an unterminated one up to the end of the text (its brackets must not count either).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# Lone surrogates can only come from \uD800..\uDFFF escapes (the UTF-8 decoder rejects encoded ones).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


@dataclass(frozen=True)
class Rejection:
    kind: ErrorKind
    reason: str
    job_id: str | None = None


class _BadJson(ValueError):
    """Raised from json.loads hooks: valid-looking JSON this decoder refuses (reason in args[0])."""


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


def json_depth_over(text: str, limit: int) -> int | None:
    """Bracket nesting depth of JSON ``text`` (outside strings) when it exceeds ``limit``, else None.

    Linear and C-speed apart from one pass over the brackets; unclosed brackets count, since json.loads
    recurses into them before it finds the error.
    """
    if text.count("[") + text.count("{") <= limit:  # an upper bound: brackets inside strings count too
        return None
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)
    return depth if depth > limit else None


def _parse_constant(name: str) -> Any:
    raise _BadJson(f"non-standard JSON literal {name} (NaN and Infinity are not JSON)")


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _BadJson(f"number {_show(literal, 40)} does not fit a double")
    return value


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        dupe = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise _BadJson(f"duplicate key {_show(dupe, 80)} in an object (ambiguous: parsers disagree which wins)")
    return obj


def _loads(text: str, max_int_digits: int) -> Any:
    def parse_int(literal: str) -> int:
        digits = len(literal) - (literal[0] == "-")
        if digits > max_int_digits:
            raise _BadJson(f"integer with {digits} digits, limit {max_int_digits}")
        return int(literal)

    return json.loads(
        text,
        parse_constant=_parse_constant,
        parse_float=_parse_float,
        parse_int=parse_int,
        object_pairs_hook=_object_without_duplicates,
    )


def _type_name(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


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
        try:
            detail = f"{type(exc).__name__}: {exc}"
        except Exception:  # noqa: BLE001 - even str(exc) may fail
            detail = type(exc).__name__
        return _reject(ErrorKind.internal_error, detail)


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
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    elif raw.startswith(_UTF16_32_BOMS):
        return _reject(ErrorKind.undecodable, "starts with a UTF-16/UTF-32 byte order mark; jobs must be UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject(ErrorKind.undecodable, f"not UTF-8: {exc}")

    depth = json_depth_over(text, max_depth)
    if depth is not None:
        return _reject(ErrorKind.too_deep, f"JSON nested {depth} levels deep, limit {max_depth}")
    try:
        obj = _loads(text, max_int_digits)
    except _BadJson as exc:
        return _reject(ErrorKind.invalid_json, f"invalid JSON: {exc.args[0]}")
    except json.JSONDecodeError as exc:
        hint = " (contains NUL bytes: UTF-16/32 or binary?)" if "\x00" in text else ""
        return _reject(ErrorKind.invalid_json, f"invalid JSON: {exc}{hint}")
    except RecursionError:  # the pre-scan makes this unreachable; kept so depth can never crash us
        return _reject(ErrorKind.too_deep, f"JSON nested too deep to parse, limit {max_depth}")
    if not isinstance(obj, dict):
        return _reject(ErrorKind.schema_violation, f"top-level JSON value must be an object, got {_type_name(obj)}")

    job_id = _job_id_of(obj)
    if _SURROGATE_ESCAPE.search(text):  # only then can a parsed string hold a lone surrogate
        issue = find_invalid_json_text(obj)
        if issue is not None:
            return _reject(ErrorKind.invalid_text, issue.reason, job_id)
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
    if job.model is not None:
        allowed = settings.model.allowed_names(served_model)
        if job.model not in allowed:
            return _reject(
                ErrorKind.unknown_model, f"model {_show(job.model)} not served; allowed: {sorted(allowed)}", job.job_id
            )
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
