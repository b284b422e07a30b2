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


def _engine_scores(tiny_qwen_dir, query, docs, instruction=None, raw=False):
    from schemas.settings import ModelSettings
    from serve_app.engine import load_engine

    engine = _engine_scores.cache.get(str(tiny_qwen_dir))
    if engine is None:
        engine = _engine_scores.cache[str(tiny_qwen_dir)] = load_engine(ModelSettings(model=str(tiny_qwen_dir), device="cpu"))
    return engine.score(query, docs, instruction=instruction, raw_scores=raw)


_engine_scores.cache = {}


def test_v1_rerank_orders_by_relevance_and_matches_the_engine(http, tiny_qwen_dir):
    r = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    want = _engine_scores(tiny_qwen_dir, QUERY, DOCS)
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


def test_instruction_changes_scores(http, tiny_qwen_dir):
    r = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "instruction": "Find sour things"})
    got = {i["index"]: i["relevance_score"] for i in r.json()["results"]}
    want = _engine_scores(tiny_qwen_dir, QUERY, DOCS, instruction="Find sour things")
    assert all(got[i] == pytest.approx(want[i], abs=1e-6) for i in range(len(DOCS)))


def test_tei_rerank_shape_raw_scores_and_return_text(http, tiny_qwen_dir):
    r = http.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["score"] for x in body] == sorted((x["score"] for x in body), reverse=True)
    assert all(x["text"] == DOCS[x["index"]] for x in body)
    raw = http.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    want_raw = _engine_scores(tiny_qwen_dir, QUERY, DOCS, raw=True)
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
        responses = list(pool.map(lambda i: client.post("/v1/rerank", json={**payload, "query": f"busy {i}"}), range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    for rejected in (r for r in responses if r.status_code == 503):
        assert rejected.headers.get("retry-after") == "1"
        assert "overloaded" in rejected.json()["error"]
