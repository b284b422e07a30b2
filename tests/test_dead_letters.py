"""Dead letters always fit the producer's size limit, and still identify the rejected payload."""

from __future__ import annotations

import base64
import hashlib
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.messages import DeadLetter, ErrorKind
from workers.dead_letters import (
    DEFAULT_MAX_DEAD_LETTER_BYTES,
    MAX_REASON_CHARS,
    MIN_DEAD_LETTER_BYTES,
    build_dead_letter,
)
from workers.decode import Rejection

PRODUCER_MAX_REQUEST_SIZE = 1024 * 1024
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
AWKWARD_TEXT = st.one_of(
    st.text(max_size=50),
    st.tuples(st.text(max_size=20), SURROGATE, st.text(max_size=20)).map("".join),
    st.sampled_from(["", '"\\', "\x00" * 300, "\u2028ü日本\U0001f600" * 100]),
    st.integers(0, 300_000).map(lambda n: "\x01" * n),  # 6 bytes each once JSON-escaped
    st.integers(0, 300_000).map(lambda n: "日" * n),  # 3 bytes each in UTF-8
)
REJECTIONS = st.builds(Rejection, st.sampled_from(list(ErrorKind)), AWKWARD_TEXT, st.none() | AWKWARD_TEXT)
SIZES = st.one_of(st.integers(0, 2000), st.integers(0, 3_000_000), st.sampled_from([786_000, 4_000_000]))
MAX_BYTES = st.one_of(
    st.sampled_from([MIN_DEAD_LETTER_BYTES, DEFAULT_MAX_DEAD_LETTER_BYTES, PRODUCER_MAX_REQUEST_SIZE]),
    st.integers(MIN_DEAD_LETTER_BYTES, 2_000_000),
)


def build(raw, rejection, max_bytes=DEFAULT_MAX_DEAD_LETTER_BYTES, **kw) -> bytes:
    args = {
        "source_topic": "rerank.jobs.recommendation",
        "source_partition": 3,
        "source_offset": 42,
        "worker_id": "host:1",
    }
    args.update(kw)
    return build_dead_letter(raw, rejection, max_bytes=max_bytes, **args)


@FUZZ
@given(SIZES, st.integers(0, 2**32), REJECTIONS, MAX_BYTES, AWKWARD_TEXT, AWKWARD_TEXT)
def test_dead_letter_never_exceeds_max_bytes_and_parses_back(size, seed, rejection, max_bytes, topic, worker_id):
    raw = random.Random(seed).randbytes(size)  # not st.binary / st.randoms: megabytes through hypothesis are slow
    data = build(raw, rejection, max_bytes, source_topic=topic, worker_id=worker_id)
    assert len(data) <= max_bytes
    letter = DeadLetter.model_validate_json(data)
    assert letter.error_kind is rejection.kind
    assert letter.payload_size == size and letter.payload_sha256 == hashlib.sha256(raw).hexdigest()
    carried = letter.payload()
    assert raw.startswith(carried)
    assert letter.payload_truncated == (carried != raw)
    if letter.payload_truncated:
        assert len(data) >= max_bytes - 4  # the prefix uses the room there is (3 bytes = 4 base64 chars)
    assert len(letter.reason) <= MAX_REASON_CHARS
    json.loads(data)  # plain JSON for non-pydantic consumers too


@FUZZ
@given(st.binary(max_size=5000), REJECTIONS)
def test_small_payloads_travel_whole(raw, rejection):
    letter = DeadLetter.model_validate_json(build(raw, rejection))
    assert letter.payload() == raw and not letter.payload_truncated


def test_payload_over_786_kb_is_cut_to_a_prefix_under_the_producer_limit():
    raw = random.Random(1).randbytes(800_000)  # base64: 1,066,668 bytes > 1 MiB
    data = build(raw, Rejection(ErrorKind.too_large, "message too large", "job-1"))
    assert DEFAULT_MAX_DEAD_LETTER_BYTES - 4 <= len(data) <= DEFAULT_MAX_DEAD_LETTER_BYTES < PRODUCER_MAX_REQUEST_SIZE
    letter = DeadLetter.model_validate_json(data)
    assert letter.payload_truncated and letter.payload_size == 800_000 and letter.job_id == "job-1"
    assert raw.startswith(letter.payload()) and len(letter.payload()) > 600_000
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("rerank.jobs.recommendation", 3, 42)


def test_whole_payload_kept_when_it_fits_exactly_up_to_the_limit():
    raw = b"x" * 600_000
    data = build(raw, Rejection(ErrorKind.schema_violation, "r"), produced_at=1)
    assert DeadLetter.model_validate_json(data).payload() == raw
    assert build(raw, Rejection(ErrorKind.schema_violation, "r"), max_bytes=len(data), produced_at=1) == data
    cut = build(raw, Rejection(ErrorKind.schema_violation, "r"), max_bytes=len(data) - 1, produced_at=1)
    assert len(cut) <= len(data) - 1 and DeadLetter.model_validate_json(cut).payload_truncated


def test_long_reason_is_cut_and_marked():
    data = build(b"{}", Rejection(ErrorKind.schema_violation, "why " * 10_000))
    reason = DeadLetter.model_validate_json(data).reason
    assert len(reason) == MAX_REASON_CHARS and reason.endswith("[...]")


def test_texts_shrink_when_the_limit_is_tiny():
    rej = Rejection(ErrorKind.internal_error, "é" * 5000, "j" * 1000)
    data = build(b"p" * 10_000, rej, max_bytes=MIN_DEAD_LETTER_BYTES, source_topic="t" * 5000, worker_id="w" * 5000)
    assert len(data) <= MIN_DEAD_LETTER_BYTES
    letter = DeadLetter.model_validate_json(data)
    assert letter.payload_size == 10_000 and letter.payload_sha256 == hashlib.sha256(b"p" * 10_000).hexdigest()


def test_unencodable_text_is_escaped_not_a_crash():
    rej = Rejection(ErrorKind.invalid_text, "query: bad \ud800", "j\udfff")
    letter = DeadLetter.model_validate_json(build(b'{"query": "\\ud800"}', rej, worker_id="w\ud800"))
    assert letter.reason == "query: bad \\ud800" and letter.job_id == "j\\udfff" and letter.worker_id == "w\\ud800"


def test_null_record_value():
    letter = DeadLetter.model_validate_json(build(None, Rejection(ErrorKind.undecodable, "empty record (null value)")))
    assert letter.payload() == b"" and letter.payload_size == 0 and not letter.payload_truncated


def test_too_small_max_bytes_is_a_configuration_error():
    with pytest.raises(ValueError, match="max_bytes"):
        build(b"x", Rejection(ErrorKind.undecodable, "r"), max_bytes=MIN_DEAD_LETTER_BYTES - 1)


def test_payload_b64_is_plain_base64_of_the_prefix():
    raw = bytes(range(256)) * 10_000
    letter = DeadLetter.model_validate_json(build(raw, Rejection(ErrorKind.too_large, "r"), max_bytes=100_000))
    assert letter.payload_b64 == base64.b64encode(raw[: len(letter.payload())]).decode()
    assert len(letter.payload()) % 3 == 0


def test_empty_payload_with_texts_cut_to_the_last_byte():
    """No room left at all after cutting texts: still fits, and an empty payload is not 'truncated'."""
    rej = Rejection(ErrorKind.undecodable, "r" * 50_000)
    for max_bytes in range(MIN_DEAD_LETTER_BYTES, MIN_DEAD_LETTER_BYTES + 40):
        for raw in (None, b"", b"ab"):
            data = build(raw, rej, max_bytes=max_bytes, produced_at=1)
            letter = DeadLetter.model_validate_json(data)
            assert len(data) <= max_bytes and letter.payload_truncated == (letter.payload() != (raw or b""))
