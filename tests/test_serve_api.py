"""The HTTP API and the Reranker deployment through a real ``serve.run`` (tiny Qwen3 model, CPU)."""

from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest

from serve_app.engine import ScoreRequest

QUERY = "which fruit is yellow"
DOCS = ["bananas are yellow fruit", "the sky is blue", "lemons are yellow and sour", "雨の日の東京", "القهوة العربية"]


@pytest.fixture(scope="module")
def http(serve_stack):
    with httpx.Client(base_url=serve_stack.base_url, timeout=60) as client:
        yield client


def _engine_scores(serve_stack, query, docs, instruction=None, raw=False):
    """Scores of an in-process engine on the served model settings (dtype included: parity is exact)."""
    from serve_app.engine import load_engine

    model = serve_stack.settings.model
    engine = _engine_scores.cache.get(model.model_dump_json())
    if engine is None:
        engine = _engine_scores.cache[model.model_dump_json()] = load_engine(model)
    return engine.score(query, docs, instruction=instruction, raw_scores=raw)


_engine_scores.cache = {}


def test_v1_rerank_orders_by_relevance_and_matches_the_engine(http, serve_stack):
    r = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    want = _engine_scores(serve_stack, QUERY, DOCS)
    got = {item["index"]: item["relevance_score"] for item in body["results"]}
    assert sorted(got) == list(range(len(DOCS)))
    for i, s in got.items():
        assert s == pytest.approx(want[i], abs=1e-6)
    scores = [item["relevance_score"] for item in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert "document" not in body["results"][0]
    assert body["usage"]["documents"] == len(DOCS) and body["id"] and body["model"]


def test_v1_rerank_top_n_documents_objects_and_cache(http):
    docs = [{"text": t} for t in DOCS]
    first = http.post("/v1/rerank", json={"query": "cache me", "documents": docs, "top_n": 2, "return_documents": True})
    assert first.status_code == 200, first.text
    results = first.json()["results"]
    assert len(results) == 2
    assert all(item["document"]["text"] == DOCS[item["index"]] for item in results)
    again = http.post("/v1/rerank", json={"query": "cache me", "documents": docs, "top_n": 2, "return_documents": True})
    assert again.json()["results"] == results
    assert again.json()["usage"]["cached_documents"] == len(DOCS)  # second call: all from Redis


def test_instruction_changes_scores(http, serve_stack):
    r = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "Find sour things"})
    got = {i["index"]: i["relevance_score"] for i in r.json()["results"]}
    want = _engine_scores(serve_stack, QUERY, DOCS, instruction="Find sour things")
    assert all(got[i] == pytest.approx(want[i], abs=1e-6) for i in range(len(DOCS)))


def test_tei_rerank_shape_raw_scores_and_return_text(http, serve_stack):
    r = http.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["score"] for x in body] == sorted((x["score"] for x in body), reverse=True)
    assert all(x["text"] == DOCS[x["index"]] for x in body)
    raw = http.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    want_raw = _engine_scores(serve_stack, QUERY, DOCS, raw=True)
    assert all(x["score"] == pytest.approx(want_raw[x["index"]], abs=1e-5) for x in raw)
    assert "text" not in raw[0]


@pytest.mark.parametrize(
    ("path", "payload", "status", "needle"),
    [
        ("/v1/rerank", {"query": "q", "documents": ["x"] * 65}, 413, "limits.max_documents"),
        ("/v1/rerank", {"query": "q", "documents": ["x" * 4001]}, 413, "limits.max_document_chars"),
        ("/v1/rerank", {"query": "q", "documents": ["x" * 3900] * 20}, 413, "limits.max_total_tokens"),
        ("/v1/rerank", {"query": "q", "documents": ["x"], "model": "no/such-model"}, 404, "no/such-model"),
        ("/v1/rerank", {"query": "q", "documents": []}, 422, "documents"),
        ("/v1/rerank", {"documents": ["x"]}, 422, "query"),
        ("/v1/rerank", {"query": "q", "documents": ["x"], "top_n": 0}, 422, "top_n"),
        ("/rerank", {"query": "q", "texts": ["word " * 5000], "truncate": False}, 413, "model.max_length"),
        ("/rerank", {"query": "q"}, 422, "texts"),
    ],
)
def test_errors_have_status_and_reason(http, path, payload, status, needle):
    r = http.post(path, json=payload)
    assert r.status_code == status, r.text
    assert needle in r.text
    assert "Traceback" not in r.text and "error" in r.json()


def test_malformed_json_is_400(http):
    r = http.post("/v1/rerank", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]


def test_health_ready_metrics_and_docs(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    http.post("/v1/rerank", json={"query": "metrics", "documents": ["a"]})
    metrics = http.get("/metrics").text
    assert 'rerank_http_requests_total{route="/v1/rerank",status="200"}' in metrics
    assert http.get("/docs").status_code == 200
    assert "/v1/rerank" in http.get("/openapi.json").json()["paths"]


def test_batching_merges_concurrent_jobs(serve_stack):
    handle = serve_stack.handle()
    before = handle.batch_stats.remote().result()
    reqs = [ScoreRequest(query=f"q{i}", documents=[f"doc {i} {k} " * 20 for k in range(6)]) for i in range(16)]
    with cf.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda r: handle.score.remote(r).result(timeout_s=60), reqs))
    after = handle.batch_stats.remote().result()
    new = {size: n - before.get(size, 0) for size, n in after.items() if n - before.get(size, 0) > 0}
    assert sum(size * n for size, n in new.items()) == 16
    assert max(new) > 1, f"no batch merged two jobs: {new}"


def test_overload_answers_503_with_retry_after(extra_app):
    app = extra_app("tight", max_batch_size=1, max_ongoing_requests=1, max_queued_requests=1)
    payload = {"query": "busy", "documents": ["long document " * 100] * 8}
    with httpx.Client(base_url=app.base_url, timeout=60) as client, cf.ThreadPoolExecutor(12) as pool:
        responses = list(
            pool.map(lambda i: client.post("/v1/rerank", json={**payload, "query": f"busy {i}"}), range(12))
        )
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    for rejected in (r for r in responses if r.status_code == 503):
        assert rejected.headers.get("retry-after") == "1"
        assert "overloaded" in rejected.json()["error"]
    # under a route prefix the body gate still runs (its detail names the field; the schema's would not)
    bad = httpx.post(
        f"{app.base_url}/v1/rerank",
        content=rb'{"query": "\ud800", "documents": ["x"]}',
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "query", bad.text
    assert httpx.post(f"{app.base_url}/v1/rerank", content=b"[", timeout=60).status_code == 415


# -- the input boundary: every bad input is a 4xx in the ErrorBody shape, never a 5xx --------------

OK_V1 = '"query": "q", "documents": ["x", "y"]'
DEEP = 10_000


def _error(r: httpx.Response, status: int, *needles: str) -> dict:
    """Asserts the status and the ErrorBody shape {error, limit?, detail?}; returns the body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    assert set(body) <= {"error", "limit", "detail"}, body
    assert "Traceback" not in r.text
    for needle in needles:
        assert needle in r.text, (needle, r.text)
    return body


def _raw(http, path: str, content: bytes | str, content_type: str | None = "application/json") -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    return http.post(path, content=content.encode() if isinstance(content, str) else content, headers=headers)


@pytest.mark.parametrize(
    ("path", "body", "field", "position"),
    [
        ("/v1/rerank", r'{"query": "ab\ud800", "documents": ["x"]}', "query", 2),
        ("/v1/rerank", r'{"query": "q", "documents": ["ok", "x\udfff"]}', "documents[1]", 1),
        ("/v1/rerank", r'{"query": "q", "documents": [{"text": "\udc00 tail"}]}', "documents[0].text", 0),
        ("/v1/rerank", r'{"query": "q", "documents": ["x"], "instruction": "find \ud83d"}', "instruction", 5),
        ("/v1/rerank", r'{"query": "q", "documents": ["x"], "model": "\udbff"}', "model", 0),
        ("/v1/rerank", r'{"query": "q", "documents": ["x"], "\ud800": 1}', "key '\\ud800' of <root>", 0),
        ("/v1/rerank", r'{"query": "\ude00\ud83d", "documents": ["x"]}', "query", 0),  # a pair in the wrong order
        ("/rerank", r'{"query": "q", "texts": ["a", "b", "\ud800"]}', "texts[2]", 0),
        ("/rerank", r'{"query": "\ud800", "texts": ["a"]}', "query", 0),
        ("/rerank", r'{"query": "q", "texts": ["a"], "instruction": "\udfff"}', "instruction", 0),
    ],
)
def test_lone_surrogate_is_422_with_field_and_position(http, path, body, field, position):
    """JSON allows "\\ud800" but UTF-8 cannot encode it: refused with where, never altered (was a 500)."""
    got = _error(_raw(http, path, body), 422, "surrogate")
    assert got["detail"]["field"] == field and got["detail"]["position"] == position, got
    assert got["error"].startswith(f"{field}: lone UTF-16 surrogate U+")


def test_surrogate_pairs_and_astral_text_are_fine(http):
    pair = _raw(http, "/v1/rerank", r'{"query": "\ud83d\ude00 fruit", "documents": ["x", "\ud83c\udf4c"]}')
    assert pair.status_code == 200, pair.text
    utf8 = http.post("/rerank", json={"query": "🍌 fruit", "texts": ["🍋", "x\x00y"], "return_text": True})
    assert utf8.status_code == 200, utf8.text
    assert {x["text"] for x in utf8.json()} == {"🍋", "x\x00y"}  # NUL is valid text, kept as is


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b"", 400, "empty"),
        (b'{"query": "\xff", "documents": ["x"]}', 400, "not valid UTF-8"),
        (b'{"query": "\xed\xa0\x80", "documents": ["x"]}', 400, "not valid UTF-8"),  # an encoded surrogate
        ('{"query": "q", "documents": ["x"]}'.encode("utf-16"), 400, "UTF-8"),
        (b"{not json", 400, "malformed JSON"),
        (b'{"query": "q", "documents": ["x"]', 400, "malformed JSON"),
        (b'{"query": "q", "documents": ["x"]} trailing', 400, "malformed JSON"),
        (b"[]", 422, "must be a JSON object, got array"),
        (b'[{"query": "q", "documents": ["x"]}]', 422, "got array"),
        (b"42", 422, "got number"),
        (b"null", 422, "got null"),
        (b'"text"', 422, "got string"),
        (b"true", 422, "got boolean"),
        (('{"query": "q", "documents": ' + "[" * DEEP + "]" * DEEP + "}").encode(), 400, f"nested {DEEP + 1} levels"),
        (b"[" * DEEP, 400, "limit 64"),
        (b"{" * DEEP, 400, "limit 64"),
        (('{"a":' * DEEP + "1" + "}" * DEEP).encode(), 400, "limit 64"),
        (("{" + OK_V1 + ', "top_n": NaN}').encode(), 400, "NaN is not JSON"),
        (("{" + OK_V1 + ', "top_n": Infinity}').encode(), 400, "Infinity is not JSON"),
        (("{" + OK_V1 + ', "extra": -Infinity}').encode(), 400, "-Infinity is not JSON"),
        (("{" + OK_V1 + ', "top_n": 1e400}').encode(), 400, "out of range"),
        (("{" + OK_V1 + ', "top_n": ' + "9" * 5000 + "}").encode(), 400, "5000 digits"),
        (("{" + OK_V1 + ', "top_n": 1, "top_n": 2}').encode(), 400, "duplicate key 'top_n'"),
        (("{" + OK_V1 + ', "top_n": 2.5}').encode(), 422, "top_n"),
        (("{" + OK_V1 + ', "top_n": -3}').encode(), 422, "top_n"),
        (b'{"query": "q", "documents": "x"}', 422, "documents"),
        (b'{"query": "q", "documents": null}', 422, "documents"),
        (b'{"query": "q", "documents": {"text": "x"}}', 422, "documents"),
        (b'{"query": "q", "documents": [1, true]}', 422, "documents"),
        (b'{"query": "q", "documents": [{"txt": "x"}]}', 422, "documents"),
        (b'{"query": "q", "documents": [[["x"]]]}', 422, "documents"),
        (b'{"query": 5, "documents": ["x"]}', 422, "query"),
        (b'{"query": "q", "documents": ["x"], "return_documents": [1]}', 422, "return_documents"),
    ],
)
def test_bad_bodies_are_4xx_in_the_error_shape(http, content, status, needle):
    _error(_raw(http, "/v1/rerank", content), status, needle)


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b"", 400, "empty"),
        (b"\x00\x01\x02", 400, "malformed JSON"),
        (b"[1, 2]", 422, "got array"),
        (b'{"query": "q", "texts": "x"}', 422, "texts"),
        (b'{"query": "q", "texts": [null]}', 422, "texts"),
        (b'{"query": "q", "texts": ["x"], "raw_scores": NaN}', 400, "NaN"),
        (b'{"query": "q", "texts": ' + b"[" * DEEP + b"]" * DEEP + b"}", 400, "limit 64"),
    ],
)
def test_bad_tei_bodies_are_4xx_in_the_error_shape(http, content, status, needle):
    _error(_raw(http, "/rerank", content), status, needle)


def test_huge_top_n_and_a_utf8_bom_are_accepted(http):
    r = _raw(http, "/v1/rerank", "{" + OK_V1 + ', "top_n": ' + "9" * 60 + "}")
    assert r.status_code == 200 and len(r.json()["results"]) == 2, r.text
    bom = _raw(http, "/v1/rerank", b"\xef\xbb\xbf{" + OK_V1.encode() + b"}")
    assert bom.status_code == 200, bom.text


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        (None, 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/jsonx", 415),
        ("application/json; charset=utf-8", 200),
        ("Application/JSON", 200),
        ("application/vnd.api+json", 200),
    ],
)
def test_content_type_must_be_json(http, content_type, status):
    r = _raw(http, "/v1/rerank", "{" + OK_V1 + "}", content_type)
    if status == 200:
        assert r.status_code == 200, r.text
    else:
        _error(r, status, "send application/json")


@pytest.mark.parametrize(
    ("path", "payload", "limit"),
    [
        ("/v1/rerank", {"query": "q" * 4001, "documents": ["x"]}, "limits.max_query_chars"),
        ("/v1/rerank", {"query": "q", "documents": ["x"], "instruction": "i" * 4001}, "limits.max_query_chars"),
        ("/rerank", {"query": "q", "texts": ["x" * 4001]}, "limits.max_document_chars"),
        ("/rerank", {"query": "q", "texts": ["word " * 200_000], "truncate": False}, "limits.max_total_tokens"),
        ("/v1/rerank", {"query": "q", "documents": ["x" * 2_000_000]}, "limits.max_total_tokens"),
    ],
)
def test_long_strings_are_413_with_the_settings_key(http, path, payload, limit):
    assert _error(http.post(path, json=payload), 413)["limit"] == limit


def test_streamed_body_over_the_size_bound_is_413(http):
    def chunks():
        for _ in range(30):
            yield b" " * 100_000

    r = http.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert "bytes" in _error(r, 413)["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "needle"),
    [
        ("POST", "/v3/rerank", 404, "no route POST '/v3/rerank'"),
        ("GET", "/nope", 404, "no route GET"),
        ("GET", "/v1/rerank", 405, "allowed: POST"),
        ("PUT", "/rerank", 405, "method not allowed"),
        ("DELETE", "/healthz", 405, "allowed: GET"),
        ("POST", "/healthz", 405, "method not allowed"),
    ],
)
def test_starlette_errors_use_the_error_shape(http, method, path, status, needle):
    r = http.request(method, path, content=b"{not json", headers={"content-type": "text/plain"})
    _error(r, status, needle)
    if status == 405:
        assert r.headers["allow"]


def test_schema_errors_name_the_field(http):
    body = _error(http.post("/v1/rerank", json={"query": "q", "documents": [{"txt": "x"}]}), 422, "documents")
    assert body["error"].startswith("request does not match the schema: documents.0")
    assert all(set(p) == {"loc", "msg"} for p in body["detail"])


def test_the_body_gate_covers_every_post_route(http):
    from serve_app.http_api import JSON_BODY_ROUTES

    paths = http.get("/openapi.json").json()["paths"]
    assert {p for p, ops in paths.items() if "post" in ops} == JSON_BODY_ROUTES
