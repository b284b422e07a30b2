"""Fuzz of the HTTP door: whatever the body, the API answers below 500, and every error is ``ErrorBody``.

Hypothesis sends arbitrary JSON values, mutated valid bodies (keys dropped, replaced or added, wrong
types, lone surrogates, huge strings, deep nesting), random bytes and odd content types to every POST
route of the real Serve app (``serve_stack``, tiny Qwen3): Cohere/Jina/vLLM bodies on ``/v1/rerank`` and
``/v2/rerank``, TEI and Cohere bodies on ``/rerank``, vLLM bodies on ``/score``. Valid-shaped bodies stay small (1 to 3
short documents) so the whole file runs in well under a minute on two cores. The body decoder is also
fuzzed in-process, where thousands of inputs cost nothing.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas.http import BodyRejected, decode_json_body

HTTP_EXAMPLES = 200
"""Per route; each example is one request (the valid ones reach the model)."""
FUZZ = settings(
    max_examples=HTTP_EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the tree; a failure prints its reproduction blob
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

SURROGATE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
CLEAN_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
ANY_TEXT = st.text(st.one_of(st.characters(codec="utf-8"), SURROGATE), max_size=12)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**20, max_value=10**120),
    st.floats(),
    ANY_TEXT,  # floats: NaN and ±Infinity too, which json.dumps writes as bare literals
)
JSON_VALUES = st.recursive(
    SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(ANY_TEXT, kids, max_size=4), max_leaves=12
)
CONTENT_TYPES = st.sampled_from(
    ["application/json"] * 8
    + ["application/json; charset=utf-8", "text/plain", None, "application/x-www-form-urlencoded"]
)
HUGE_SIZES = st.sampled_from([4001, 20_000, 70_000, 1_000_000])
DEPTHS = st.one_of(st.integers(1, 20_000), st.sampled_from([63, 64, 65, 10_000]))
_HOLE = "\x00HOLE\x00"  # a placeholder value whose JSON text is replaced by raw (e.g. deeply nested) text

LONG_DOCUMENT_OPTIONS = {  # every scoring body takes them (schemas.http.ScoringOptions)
    "truncation_direction": st.sampled_from(["left", "right", "Left", "Right"]),
    "max_tokens_per_doc": st.integers(1, 64),
    "long_documents": st.sampled_from(["truncate", "chunk"]),
}
V1_BODIES = st.fixed_dictionaries(
    {
        "query": CLEAN_TEXT,
        "documents": st.lists(CLEAN_TEXT | st.builds(lambda t: {"text": t}, CLEAN_TEXT), min_size=1, max_size=3),
    },
    optional={
        "top_n": st.integers(1, 4),
        "return_documents": st.booleans(),
        "instruction": CLEAN_TEXT,
        "max_chunks_per_doc": st.integers(1, 9),  # an extra field peer clients send: ignored
        **LONG_DOCUMENT_OPTIONS,
    },
)
TEI_BODIES = st.fixed_dictionaries(
    {"query": CLEAN_TEXT, "texts": st.lists(CLEAN_TEXT, min_size=1, max_size=3)},
    optional={
        "raw_scores": st.booleans(),
        "return_text": st.booleans(),
        "truncate": st.booleans(),
        "instruction": CLEAN_TEXT,
        **LONG_DOCUMENT_OPTIONS,
    },
)
SCORE_BODIES = st.one_of(
    st.fixed_dictionaries(
        {
            "text_1": CLEAN_TEXT | st.lists(CLEAN_TEXT, min_size=1, max_size=1),
            "text_2": CLEAN_TEXT | st.lists(CLEAN_TEXT, min_size=1, max_size=3),
        },
        optional={"instruction": CLEAN_TEXT, **LONG_DOCUMENT_OPTIONS},
    ),
    st.integers(1, 3).flatmap(  # N:N pairs
        lambda n: st.fixed_dictionaries(
            {
                "text_1": st.lists(CLEAN_TEXT, min_size=n, max_size=n),
                "text_2": st.lists(CLEAN_TEXT, min_size=n, max_size=n),
            }
        )
    ),
)
ROUTES = {"/v1/rerank": V1_BODIES, "/rerank": TEI_BODIES}
NEW_ROUTES = {"/v2/rerank": V1_BODIES, "/rerank (cohere body)": V1_BODIES, "/score": SCORE_BODIES}
"""Routes added with the client shapes (fewer examples each: they share the validation of the first two)."""


@st.composite
def _mutated(draw, valid: st.SearchStrategy[dict]) -> tuple[bytes, str | None]:
    """A valid body, then one mutation (or none), serialized one of several ways."""
    body = draw(valid)
    key = draw(st.sampled_from(sorted(body) + ["extra"]))
    raw_value: str | None = None
    match draw(st.sampled_from(["none", "drop", "replace", "surrogate", "huge", "deep", "wrong_type_item"])):
        case "drop":
            body.pop(key, None)
        case "replace":
            body[key] = draw(JSON_VALUES)
        case "surrogate":
            text = draw(CLEAN_TEXT)
            at = draw(st.integers(0, len(text)))
            bad = text[:at] + draw(SURROGATE) + text[at:]
            target = draw(st.sampled_from(["value", "item", "key"]))
            if target == "key":
                body[bad] = 1
            elif target == "item" and isinstance(body.get(key), list):
                body[key][draw(st.integers(0, len(body[key]) - 1))] = bad
            else:
                body[key] = bad
        case "huge":
            body[key] = "x" * draw(HUGE_SIZES)
        case "deep":
            n = draw(DEPTHS)
            opener = draw(st.sampled_from(["[", '{"a":']))
            closer = "]" if opener == "[" else "}"
            raw_value = opener * n + "1" + closer * n * draw(st.sampled_from([1, 0]))  # closed or not
            body[key] = _HOLE
        case "wrong_type_item":
            if isinstance(body.get(key), list):
                body[key].append(draw(JSON_VALUES))
    return _serialize(draw, body, raw_value), draw(CONTENT_TYPES)


def _serialize(draw, value, raw_value: str | None = None) -> bytes:
    """JSON text of ``value`` as a client might send it: ASCII-escaped, or raw UTF-8 (surrogates as CESU bytes)."""
    ascii_only = draw(st.booleans())
    text = json.dumps(value, ensure_ascii=ascii_only)
    if raw_value is not None:
        text = text.replace(json.dumps(_HOLE, ensure_ascii=ascii_only), raw_value)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def _arbitrary_json(draw) -> tuple[bytes, str | None]:
    return _serialize(draw, draw(JSON_VALUES)), draw(CONTENT_TYPES)


@st.composite
def _raw_bytes(draw, valid: st.SearchStrategy[dict]) -> tuple[bytes, str | None]:
    """Random bytes, or a valid body with bytes flipped, inserted or cut off."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=256)), "application/json"
    data = bytearray(json.dumps(draw(valid), ensure_ascii=False).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        match draw(st.sampled_from(["flip", "insert", "cut"])):
            case "flip":
                data[at] = draw(st.integers(0, 255))
            case "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=4))
            case "cut":
                del data[at:]
                break
    return bytes(data), "application/json"


def _requests(path: str) -> st.SearchStrategy[tuple[bytes, str | None]]:
    valid = {**ROUTES, **NEW_ROUTES}[path]
    return st.one_of(_mutated(valid), _arbitrary_json(), _raw_bytes(valid))


@pytest.fixture(scope="module")
def http(serve_stack):
    with httpx.Client(base_url=serve_stack.base_url, timeout=60) as client:
        yield client


def _assert_answer(r: httpx.Response, path: str) -> None:
    """Below 500; an error is ErrorBody JSON ({error: str, limit?: str, detail?}); a success has the route's shape."""
    event(f"{path} {r.status_code}")  # the status mix shows with --hypothesis-show-statistics
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    if r.status_code >= 400:
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
        assert set(body) <= {"error", "limit", "detail"}, body
        assert isinstance(body.get("limit", ""), str)
    elif path == "/rerank" and isinstance(body, list):
        assert r.status_code == 200 and body
        assert all(set(x) <= {"index", "score", "text", "chunk"} for x in body)
    elif path == "/score":
        assert r.status_code == 200 and body["object"] == "list" and body["data"]
        assert [d["index"] for d in body["data"]] == list(range(len(body["data"])))
    else:
        assert r.status_code == 200 and isinstance(body["results"], list) and body["results"]


def _post(http: httpx.Client, path: str, content: bytes, content_type: str | None) -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    return http.post(path, content=content, headers=headers)


@FUZZ
@given(request=_requests("/v1/rerank"))
def test_fuzz_v1_rerank(http, request):
    _assert_answer(_post(http, "/v1/rerank", *request), "/v1/rerank")


@FUZZ
@given(request=_requests("/rerank"))
def test_fuzz_tei_rerank(http, request):
    _assert_answer(_post(http, "/rerank", *request), "/rerank")


@settings(FUZZ, max_examples=60)
@pytest.mark.parametrize("route", sorted(NEW_ROUTES))
@given(data=st.data())
def test_fuzz_client_routes(http, route, data):
    path = route.split(" ")[0]
    _assert_answer(_post(http, path, *data.draw(_requests(route))), path)


@settings(FUZZ, max_examples=60)
@given(route=st.sampled_from(sorted({**ROUTES, **NEW_ROUTES})), data=st.data())
def test_valid_bodies_always_score(http, route, data):
    """The other side of the boundary: any well-formed body (any Unicode but surrogates, NUL too) is a 200."""
    path = route.split(" ")[0]
    body = data.draw({**ROUTES, **NEW_ROUTES}[route])
    r = _post(http, path, _serialize(data.draw, body), "application/json")
    assert r.status_code == 200, r.text[:500]
    _assert_answer(r, path)


# -- the body decoder alone (no server) ------------------------------------------------------------


@settings(FUZZ, max_examples=1500)
@given(request=st.one_of(_mutated(V1_BODIES), _arbitrary_json(), _raw_bytes(TEI_BODIES)))
def test_decoder_is_total(request):
    """Any bytes: a dict or a BodyRejected with a 4xx status and a reason; never another exception."""
    raw, _ = request
    try:
        value = decode_json_body(raw)
    except BodyRejected as exc:
        assert exc.status in (400, 422) and exc.reason
        if exc.status == 422 and "surrogate" in exc.reason:
            assert exc.detail["field"] and exc.detail["position"] >= 0
    else:
        assert isinstance(value, dict)
        json.dumps(value, allow_nan=False).encode("utf-8")  # what it accepts is encodable, strict JSON


@settings(FUZZ, max_examples=500)
@given(
    value=st.dictionaries(
        CLEAN_TEXT,
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(10**30), 10**30)
            | st.floats(allow_nan=False, allow_infinity=False)
            | CLEAN_TEXT,
            lambda kids: st.lists(kids, max_size=3) | st.dictionaries(CLEAN_TEXT, kids, max_size=3),
            max_leaves=8,
        ),
    ),
    ascii_only=st.booleans(),
)
def test_decoder_accepts_every_strict_json_object(value, ascii_only):
    assert decode_json_body(json.dumps(value, ensure_ascii=ascii_only).encode()) == value
