"""Strict JSON decoding shared by both doors (Kafka records and HTTP bodies): one policy, one code.

Python's json module accepts things a wire boundary must not: NaN/Infinity, numbers that overflow a
double, integers long enough to raise ValueError (> 4300 digits), duplicate keys (parsers disagree
which wins), and nesting deep enough to raise RecursionError. ``loads_object`` refuses all of
them with a ``StrictJsonError`` whose ``kind`` each door maps to its own answer (dead-letter kind,
HTTP status). Nesting is bounded by a linear pre-scan *before* parsing; a UTF-8 BOM is skipped
(RFC 8259 allows it), UTF-16/32 is refused; lone surrogates anywhere (keys included) are reported
with their path and position, never altered.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from itertools import accumulate
from typing import Any, Literal

from schemas.text import find_invalid_json_text

MAX_DEPTH = 64
"""Deepest nesting accepted; jobs need 4 (object, candidates, candidate, metadata), HTTP bodies 3."""
MAX_INT_DIGITS = 100
"""Longest integer literal accepted: wider than any fixed-size integer type (2**256 has 78 digits)."""

Kind = Literal["encoding", "too_deep", "syntax", "not_object", "invalid_text"]

_UTF16_32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# A string literal, or an unterminated one running to the end: brackets inside it are not nesting.
_STRING_LITERAL = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_ALL_BUT_BRACKETS = re.compile(r"[^\[\]{}]+")
_NESTING_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# A lone surrogate can only come from a \uD800..\uDFFF escape: encoded ones are not UTF-8 at all.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


class StrictJsonError(ValueError):
    """Why the input is refused: ``kind`` for the door's mapping, ``reason`` for people, ``detail`` for
    machines; ``value`` is the parsed object when only its text was invalid (to read a job id)."""

    def __init__(self, kind: Kind, reason: str, detail: dict[str, Any] | None = None, value: Any = None):
        super().__init__(reason)
        self.kind, self.reason, self.detail, self.value = kind, reason, detail, value


class _Refused(ValueError):
    """Raised by the json.loads hooks for JSON that Python accepts but this boundary does not."""


def type_name(value: object) -> str:
    return "null" if value is None else _JSON_TYPE.get(type(value), type(value).__name__)


def nesting_depth(text: str, limit: int) -> int | None:
    """How deep JSON ``text`` nests when that is more than ``limit``, else None; never recurses.

    Counting brackets bounds the depth from above, so small inputs skip the scan; otherwise string
    literals are blanked and the running bracket balance is taken, all in C loops. Unclosed brackets
    count: the parser would recurse into them before finding the error.
    """
    if text.count("[") + text.count("{") <= limit:
        return None
    brackets = _ALL_BUT_BRACKETS.sub("", _STRING_LITERAL.sub("", text))
    depth = max(accumulate(map(_NESTING_STEP.__getitem__, brackets)), default=0)
    return depth if depth > limit else None


def _shown(text: str, limit: int = 80) -> str:
    shown = ascii(text[: limit + 1])
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _no_constant(name: str) -> Any:
    raise _Refused(f"non-standard literal: {name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Refused(f"number {_shown(literal, 40)} does not fit a double (out of range)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        keys = [k for k, _ in pairs]
        twice = next(k for i, k in enumerate(keys) if k in keys[:i])
        raise _Refused(f"duplicate key {_shown(twice)} in an object (ambiguous: parsers disagree which wins)")
    return obj


def loads_object(raw: bytes, *, max_depth: int = MAX_DEPTH, max_int_digits: int = MAX_INT_DIGITS) -> dict[str, Any]:
    """``raw`` as a JSON object, or ``StrictJsonError``. The caller bounds ``len(raw)`` first."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    elif raw.startswith(_UTF16_32_BOMS):
        raise StrictJsonError("encoding", "starts with a UTF-16/UTF-32 byte order mark; JSON must be UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJsonError(
            "encoding", f"not valid UTF-8: {exc.reason} at byte {exc.start}", {"byte": exc.start}
        ) from None
    depth = nesting_depth(text, max_depth)
    if depth is not None:
        raise StrictJsonError("too_deep", f"JSON nested {depth} levels deep, limit {max_depth}")

    def bounded_int(literal: str) -> int:
        digits = len(literal) - literal.startswith("-")
        if digits > max_int_digits:
            raise _Refused(f"integer with {digits} digits, limit {max_int_digits}")
        return int(literal)

    try:
        value = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite_float, parse_int=bounded_int,
            object_pairs_hook=_unique_keys,
        )  # fmt: skip
    except _Refused as exc:
        raise StrictJsonError("syntax", str(exc)) from None
    except json.JSONDecodeError as exc:
        hint = " (contains NUL bytes: UTF-16/32 or binary?)" if "\x00" in text else ""
        at: dict[str, Any] = {"line": exc.lineno, "column": exc.colno, "position": exc.pos}
        raise StrictJsonError("syntax", f"{exc}{hint}", at) from None
    except RecursionError:  # unreachable after the depth scan; kept so nesting can never crash a door
        raise StrictJsonError("too_deep", f"JSON nested too deep to parse, limit {max_depth}") from None
    if not isinstance(value, dict):
        raise StrictJsonError("not_object", f"top-level JSON value must be an object, got {type_name(value)}")
    if _SURROGATE_ESCAPE.search(text):  # only then can a parsed string hold a lone surrogate
        issue = find_invalid_json_text(value)
        if issue is not None:
            where: dict[str, Any] = {
                "field": issue.field,
                "position": issue.position,
                "codepoint": f"U+{issue.codepoint:04X}",
            }
            raise StrictJsonError("invalid_text", issue.reason, where, value)
    return value
