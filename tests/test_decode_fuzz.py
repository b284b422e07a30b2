"""decode_job is total: whatever bytes a producer sends, one RerankJob or one Rejection, never an exception.

Property tests attack the Kafka boundary with arbitrary bytes, arbitrary JSON and mutated valid jobs;
accepted jobs must be usable downstream (every text encodes as UTF-8, the job re-serializes), rejections
must make a dead letter that fits. Regression tests pin each crash seen from real producers.
"""

from __future__ import annotations

import codecs
import copy
import inspect
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.messages import ErrorKind, ModelRef, RankedCandidate, RerankJob, RerankResult, Timings, now_ms
from schemas.settings import LimitsSettings, Settings
from workers import decode as decode_module
from workers.dead_letters import DEFAULT_MAX_DEAD_LETTER_BYTES, build_dead_letter
from workers.decode import DEFAULT_MAX_DEPTH, MAX_REASON_CHARS, Rejection, deadline_passed, decode_job

SETTINGS = Settings()
SERVED = "served-model"
FEEDS = sorted(SETTINGS.kafka.feeds)
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# -- checks shared by every test -------------------------------------------------------------------------------


def assert_usable(job: RerankJob) -> None:
    """What the worker does with an accepted job must not raise: cache keys, Kafka keys, result JSON."""
    instruction = job.instruction or SETTINGS.kafka.feeds[job.feed].instruction
    for text in (job.job_id, job.feed, job.query, instruction, job.model or ""):
        text.encode("utf-8")
    for cand in job.candidates:
        cand.id.encode("utf-8")
        cand.text.encode("utf-8")
    assert RerankJob.model_validate_json(job.model_dump_json().encode("utf-8")) == job
    result = RerankResult(
        job_id=job.job_id,
        feed=job.feed,
        model=ModelRef(id=SERVED, kind="seq-cls"),
        ranked=[RankedCandidate(id=c.id, score=0.5, rank=i + 1) for i, c in enumerate(job.candidates)],
        cached=0,
        timings=Timings(queue_wait_ms=float(now_ms() - job.created_at), cache_ms=0, model_ms=0, total_ms=0),
        worker_id="w",
    )
    result.model_dump_json().encode("utf-8")


def check_total(raw: object, topic: str = "rerank.jobs.recommendation", **kw) -> RerankJob | Rejection:
    """Decode and assert the outcome is exactly one usable RerankJob or one well-formed Rejection."""
    out = decode_job(raw, topic, SETTINGS, SERVED, **kw)  # type: ignore[arg-type]
    assert isinstance(out, RerankJob) != isinstance(out, Rejection), out
    if isinstance(out, RerankJob):
        assert_usable(out)
        return out
    assert isinstance(out.kind, ErrorKind)
    assert out.kind is not ErrorKind.internal_error, out.reason  # a bug the guard hid: fuzzing must see none
    assert out.reason and len(out.reason) <= MAX_REASON_CHARS
    out.reason.encode("utf-8")
    if out.job_id is not None:
        out.job_id.encode("utf-8")  # it becomes the dead letter's Kafka key
    payload = raw if isinstance(raw, bytes) else None
    letter = build_dead_letter(payload, out, source_topic=topic, source_partition=0, source_offset=1, worker_id="w")
    assert len(letter) <= DEFAULT_MAX_DEAD_LETTER_BYTES
    return out


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode("utf-8")


def job(**kw) -> dict:
    base = {"job_id": "j1", "feed": "recommendation", "query": "q", "candidates": [{"id": "a", "text": "x"}]}
    base.update(kw)
    return base


def rejected(raw: object, kind: ErrorKind, **kw) -> Rejection:
    out = check_total(raw, **kw)
    assert isinstance(out, Rejection) and out.kind is kind, out
    return out


# -- strategies ----------------------------------------------------------------------------------------------------

SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
WITH_SURROGATE = st.tuples(st.text(max_size=8), SURROGATE, st.text(max_size=8)).map("".join)
ANY_TEXT = st.text(max_size=30) | WITH_SURROGATE
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(ANY_TEXT, kids, max_size=5),
    max_leaves=30,
)
CLEAN_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=15,
)

# Raw JSON text swapped in for a sentinel string after json.dumps: what json.dumps cannot produce itself.
RAW_FRAGMENTS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1E-400",
    "1" * 5000,
    "-" + "9" * 101,
    "9" * 100,
    "[" * 70 + "]" * 70,
    "[" * 10_000 + "]" * 10_000,
    "[" * 10_000,
    '{"a":' * 5000 + "1" + "}" * 5000,
    '"\\ud800"',
    '"x\\udfff\\ud800y"',
    '"\\ud83d\\ude00"',
    '"\\u0000"',
    '"' + "x" * 300_000 + '"',
    '"[[[[{{{{"',
]
JUNK = (
    ANY_JSON
    | st.sampled_from(["", 0, -1, True, None, 1.5, [], {}, "x" * 30_000, 2**64])
    | st.integers(-(2**80), 2**80)
    | st.sampled_from(RAW_FRAGMENTS).map(lambda f: ("raw", f))
)


@st.composite
def valid_jobs(draw) -> dict:
    n = draw(st.integers(1, 5))
    ids = draw(st.lists(st.text(min_size=1, max_size=12), min_size=n, max_size=n, unique=True))
    cands = []
    for cid in ids:
        cand = {"id": cid, "text": draw(st.text(max_size=40))}
        if draw(st.booleans()):
            cand["metadata"] = draw(st.dictionaries(st.text(max_size=8), CLEAN_JSON, max_size=3))
        cands.append(cand)
    out = {
        "job_id": draw(st.text(min_size=1, max_size=40)),
        "feed": draw(st.sampled_from(FEEDS)),
        "query": draw(st.text(max_size=60)),
        "candidates": cands,
    }
    optional = {
        "instruction": st.text(max_size=30),
        "top_k": st.integers(1, 10),
        "threshold": st.floats(0, 1),
        "model": st.sampled_from([SERVED, "auto"]),
        "created_at": st.just(now_ms()),
        "deadline_ms": st.integers(10**7, 10**12),
        "long_documents": st.sampled_from(["truncate", "chunk", None]),
        "truncation_direction": st.sampled_from(["left", "right"]),
        "max_tokens_per_doc": st.integers(1, 2**63 - 1),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            out[key] = draw(strategy)
    return out


def _containers(node: object):
    if isinstance(node, dict | list):
        yield node
        for child in node.values() if isinstance(node, dict) else node:
            yield from _containers(child)


@st.composite
def mutated_jobs(draw) -> tuple[bytes, str]:
    """A valid job with 1-4 structural mutations, then maybe a byte-level one; returns (raw, topic)."""
    obj = copy.deepcopy(draw(valid_jobs()))
    topic = SETTINGS.kafka.feeds[obj["feed"]].topic
    raws: dict[str, str] = {}

    def junk():
        value = draw(JUNK)
        if isinstance(value, tuple):  # ("raw", fragment)
            sentinel = f"@@RAW{len(raws)}@@"
            raws[json.dumps(sentinel)] = value[1]
            return sentinel
        return copy.deepcopy(value)  # sampled_from hands out the same [] and {} objects every time

    for _ in range(draw(st.integers(1, 4))):
        node = draw(st.sampled_from(list(_containers(obj))))
        op = draw(st.sampled_from(["drop", "replace", "add", "surrogate", "dupkey", "nest"]))
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if op == "drop" and keys:
            del node[draw(st.sampled_from(keys))]
        elif op == "replace" and keys:
            node[draw(st.sampled_from(keys))] = junk()
        elif op == "add":
            if isinstance(node, dict):
                node[draw(ANY_TEXT)] = junk()
            else:
                node.append(junk())
        elif op == "surrogate" and keys:
            key = draw(st.sampled_from(keys))
            value = node[key]
            if isinstance(value, str):
                at = draw(st.integers(0, len(value)))
                node[key] = value[:at] + draw(SURROGATE) + value[at:]
            elif isinstance(node, dict):
                node[key + draw(SURROGATE)] = node.pop(key)
        elif op == "dupkey" and isinstance(node, dict) and keys:
            sentinel = f"@@KEY{len(raws)}@@"
            raws[json.dumps(sentinel)] = json.dumps(draw(st.sampled_from(keys)))
            node[sentinel] = junk()
        elif op == "nest" and keys:
            key = draw(st.sampled_from(keys))
            sentinel = f"@@RAW{len(raws)}@@"
            levels = draw(st.sampled_from([1, DEFAULT_MAX_DEPTH - 5, DEFAULT_MAX_DEPTH, 200]))
            raws[json.dumps(sentinel)] = "[" * levels + json.dumps(node[key]) + "]" * levels
            node[key] = sentinel

    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    for sentinel, fragment in reversed(raws.items()):  # later fragments may hold earlier sentinels
        text = text.replace(sentinel, fragment)
    raw = text.encode("utf-8", "surrogatepass")  # unescaped surrogates: CESU-8 bytes, not UTF-8
    byte_op = draw(st.sampled_from(["none"] * 6 + ["bom", "nul", "truncate", "flip", "utf16"]))
    if byte_op == "bom":
        raw = codecs.BOM_UTF8 + raw
    elif byte_op == "nul":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + b"\x00" + raw[at:]
    elif byte_op == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif byte_op == "flip" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif byte_op == "utf16":
        raw = text.encode("utf-16", "surrogatepass")
    return raw, topic


# -- properties ----------------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(raw):
    check_total(raw)


@FUZZ
@given(ANY_JSON, st.booleans())
def test_arbitrary_json_values(value, ascii_only):
    check_total(json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@FUZZ
@given(valid_jobs())
def test_valid_jobs_are_accepted_unchanged(obj):
    out = check_total(dumps(obj), topic=SETTINGS.kafka.feeds[obj["feed"]].topic)
    assert isinstance(out, RerankJob), out
    assert out.query == obj["query"] and [c.text for c in out.candidates] == [c["text"] for c in obj["candidates"]]


@FUZZ
@given(mutated_jobs())
def test_mutated_jobs(raw_and_topic):
    raw, topic = raw_and_topic
    check_total(raw, topic=topic)


@FUZZ
@given(valid_jobs(), st.data())
def test_a_lone_surrogate_anywhere_is_invalid_text(obj, data):
    """Insert one lone surrogate into any string of a valid job: always invalid_text, never accepted."""
    strings = []

    def collect(node):
        if isinstance(node, dict):
            for key, value in node.items():
                strings.append((node, key, True))
                if isinstance(value, str):
                    strings.append((node, key, False))
                collect(value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str):
                    strings.append((node, i, False))
                collect(value)

    topic = SETTINGS.kafka.feeds[obj["feed"]].topic
    collect(obj)
    node, key, is_key = data.draw(st.sampled_from(strings))
    bad = data.draw(SURROGATE)
    if is_key:
        node[key + bad] = node.pop(key)
    else:
        node[key] = node[key] + bad
    out = check_total(dumps(obj), topic=topic)
    assert isinstance(out, Rejection) and out.kind is ErrorKind.invalid_text, out
    assert f"U+{ord(bad):04X}" in out.reason


# -- regressions: one per crash seen from real producers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        (job(query="\ud800"), "query:"),
        (job(instruction="ok \udfff"), "instruction:"),
        (
            job(candidates=[{"id": str(i), "text": "x" if i != 3 else "ab\ud800"} for i in range(5)]),
            "candidates[3].text:",
        ),
        (job(candidates=[{"id": "a\udc00", "text": "x"}]), "candidates[0].id:"),
        (job(feed="recommendation\ud800"), "feed:"),
        (job(model="m\ud800"), "model:"),
        (
            job(candidates=[{"id": "a", "text": "x", "metadata": {"k": ["ok", "\ud800"]}}]),
            "candidates[0].metadata.k[1]:",
        ),
        (
            job(candidates=[{"id": "a", "text": "x", "metadata": {"\ud800": 1}}]),
            "key '\\ud800' of candidates[0].metadata",
        ),
    ],
)
def test_lone_surrogate_in_text_is_rejected_with_its_place(obj, where):
    out = rejected(dumps(obj), ErrorKind.invalid_text)
    assert out.reason.startswith(where), out.reason
    assert out.job_id == "j1"


def test_lone_surrogate_reason_gives_the_character_position():
    out = rejected(dumps(job(query="abc\ud800")), ErrorKind.invalid_text)
    assert "U+D800 at character 3" in out.reason


def test_lone_surrogate_in_job_id_is_rejected_without_an_unencodable_key():
    out = rejected(dumps(job(job_id="j\ud800")), ErrorKind.invalid_text)
    assert out.job_id is None and out.reason.startswith("job_id:")


def test_surrogate_pairs_and_nul_characters_are_valid_text_and_kept_exactly():
    out = check_total(dumps(job(query="\ud83d\ude00 x\u0000y")))  # json.dumps writes an escaped pair
    assert isinstance(out, RerankJob) and out.query == "\U0001f600 x\x00y"


def test_surrogates_encoded_in_the_bytes_are_not_utf8():
    rejected(b'{"job_id": "j", "query": "\xed\xa0\x80"}', ErrorKind.undecodable)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b"[" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        dumps(job())[:-1] + b', "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    ],
    ids=["closed", "unclosed", "objects", "inside-a-job"],
)
def test_deep_nesting_is_rejected_before_parsing(raw):
    out = rejected(raw, ErrorKind.too_deep)
    assert "limit 64" in out.reason


def _metadata_nested(levels: int) -> bytes:
    """A job whose deepest bracket is at ``levels``: object, candidates, candidate, metadata, then lists."""
    inner = "[" * (levels - 4) + "1" + "]" * (levels - 4)
    return dumps(job())[:-3] + f', "metadata": {{"k": {inner}}}}}]}}'.encode()


def test_depth_limit_is_exact_and_configurable():
    assert json.loads(_metadata_nested(DEFAULT_MAX_DEPTH))  # the helper builds valid JSON
    assert isinstance(check_total(_metadata_nested(DEFAULT_MAX_DEPTH)), RerankJob)
    rejected(_metadata_nested(DEFAULT_MAX_DEPTH + 1), ErrorKind.too_deep)
    rejected(_metadata_nested(9), ErrorKind.too_deep, max_depth=8)
    assert isinstance(check_total(_metadata_nested(8), max_depth=8), RerankJob)


def test_brackets_inside_strings_do_not_count_as_depth():
    text = '[{"' * 1000 + '\\"]'
    assert isinstance(check_total(dumps(job(query=text))), RerankJob)
    rejected(dumps(job())[:-1] + b', "x": "' + b"[" * 5000 + b"}", ErrorKind.invalid_json)  # unterminated string


@pytest.mark.parametrize(
    ("fragment", "needle"),
    [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e400", "does not fit a double"),
        ("-1e400", "does not fit a double"),
        ("1" * 5000, "5000 digits"),  # Python's int() raises ValueError past 4300 digits
        ("-" + "9" * 101, "101 digits"),
    ],
)
def test_weird_numbers_are_invalid_json(fragment, needle):
    out = rejected(f'{{"job_id": "j1", "threshold": {fragment}}}'.encode(), ErrorKind.invalid_json)
    assert needle in out.reason
    assert out.job_id is None  # rejected while parsing, before the id is known


def test_large_but_bounded_numbers_in_metadata_are_fine():
    meta = {"big": 10**99, "neg": -(10**99), "f": 1.7e308, "tiny": 5e-324}
    out = check_total(dumps(job(candidates=[{"id": "a", "text": "x", "metadata": meta}])))
    assert isinstance(out, RerankJob) and out.candidates[0].metadata == meta
    rejected(
        dumps(job(candidates=[{"id": "a", "text": "x", "metadata": {"big": 10**20}}])),
        ErrorKind.invalid_json,
        max_int_digits=10,
    )


def test_out_of_range_ints_for_job_fields_are_schema_violations():
    rejected(dumps(job(created_at=2**63)), ErrorKind.schema_violation)
    rejected(dumps(job(created_at=-1)), ErrorKind.schema_violation)
    rejected(dumps(job(deadline_ms=10**40)), ErrorKind.schema_violation)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"job_id":"a","job_id":"b","feed":"recommendation","query":"q","candidates":[{"id":"a","text":"x"}]}',
        b'{"job_id":"a","feed":"recommendation","query":"q","candidates":[{"id":"a","text":"x","text":"y"}]}',
    ],
)
def test_duplicate_keys_are_invalid_json(raw):
    assert "duplicate key" in rejected(raw, ErrorKind.invalid_json).reason


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"[]", "array"),
        (b'"job"', "string"),
        (b"1", "number"),
        (b"null", "null"),
        (b"true", "boolean"),
        (b"  [1, {}]  ", "array"),
    ],
)
def test_non_object_top_level_is_a_schema_violation(raw, name):
    assert rejected(raw, ErrorKind.schema_violation).reason.endswith(f"got {name}")


def test_utf8_bom_is_skipped_and_utf16_is_refused():
    assert isinstance(check_total(codecs.BOM_UTF8 + dumps(job())), RerankJob)
    rejected(json.dumps(job()).encode("utf-16"), ErrorKind.undecodable)  # with its BOM
    out = rejected(json.dumps(job()).encode("utf-16-le"), ErrorKind.invalid_json)  # without
    assert "NUL" in out.reason


def test_null_bytes():
    rejected(b"\x00", ErrorKind.invalid_json)
    rejected(dumps(job()) + b"\x00", ErrorKind.invalid_json)
    rejected(b'{"job_id": "j\x00"}', ErrorKind.invalid_json)  # a raw control character inside a string


def test_empty_missing_and_wrong_type_values():
    rejected(None, ErrorKind.undecodable)
    rejected(b"", ErrorKind.invalid_json)
    rejected("a str, not bytes", ErrorKind.undecodable)
    assert isinstance(check_total(bytearray(dumps(job()))), RerankJob)
    assert isinstance(check_total(memoryview(dumps(job()))), RerankJob)


def test_oversized_message_is_too_large_and_its_dead_letter_still_fits():
    raw = dumps(job(query="q" * SETTINGS.limits.max_message_bytes))
    out = rejected(raw, ErrorKind.too_large)  # check_total also asserts the dead letter fits 900 kB
    assert str(SETTINGS.limits.max_message_bytes) in out.reason


def test_rejected_message_over_786_kb_makes_a_dead_letter_under_one_mib():
    raw = dumps(job(query="x" * 800_000))  # too long a query: rejected, and base64 of it is > 1 MiB
    out = rejected(raw, ErrorKind.too_large)
    letter = build_dead_letter(raw, out, source_topic="t", source_partition=0, source_offset=0, worker_id="w")
    assert len(letter) <= DEFAULT_MAX_DEAD_LETTER_BYTES < 1024 * 1024


def test_huge_untrusted_strings_in_reasons_are_cut():
    raw = dumps(job(**{"k" * 100_000: 1}))
    out = rejected(raw, ErrorKind.schema_violation)
    assert len(out.reason) < 200
    out = rejected(dumps(job(feed="f" * 100_000)), ErrorKind.unknown_feed)
    assert len(out.reason) < 300


def test_unexpected_exception_becomes_internal_error(monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(decode_module, "check_limits", boom)
    out = decode_job(dumps(job()), "rerank.jobs.recommendation", SETTINGS, SERVED)
    assert out == Rejection(ErrorKind.internal_error, "RuntimeError: boom")

    class Nasty(Exception):
        def __str__(self):
            raise ValueError("no str")

    def nasty(*args, **kwargs):
        raise Nasty

    monkeypatch.setattr(decode_module, "check_limits", nasty)
    out = decode_job(dumps(job()), "rerank.jobs.recommendation", SETTINGS, SERVED)
    assert isinstance(out, Rejection) and out.kind is ErrorKind.internal_error and out.reason == "Nasty"


def test_limits_still_apply_with_custom_settings():
    tight = Settings(limits=LimitsSettings(max_message_bytes=100))
    out = decode_job(dumps(job(query="q" * 200)), "rerank.jobs.recommendation", tight, SERVED)
    assert isinstance(out, Rejection) and out.kind is ErrorKind.too_large


def test_public_signatures_callers_depend_on():
    params = inspect.signature(decode_job).parameters
    assert list(params)[:4] == ["raw", "topic", "settings", "served_model"]
    assert params["max_depth"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(deadline_passed).parameters) == ["job"]
    assert deadline_passed(RerankJob.model_validate(job(created_at=0, deadline_ms=1)))
    assert not deadline_passed(RerankJob.model_validate(job()))
