"""Each route checked by the client that uses it, against the running Serve app (tiny Qwen3, CPU).

The real ``cohere`` SDK (``Client`` -> ``/v1/rerank``, ``ClientV2`` -> ``/v2/rerank``), a TEI-shaped
client (httpx posting TEI bodies, reading TEI answers), Jina / vLLM bodies, vLLM ``/score``, the
OpenAI model list and ``/info``. Every route's scores must equal the TEI route's for the same pairs,
in the same best-first order.
"""

from __future__ import annotations

import cohere
import httpx
import pytest

QUERY = "which fruit is yellow"
DOCS = ["bananas are yellow fruit", "the sky is blue", "lemons are yellow and sour", "雨の日の東京", "القهوة العربية"]
INSTRUCTION = "Find the sour fruit"


@pytest.fixture(scope="module")
def http(serve_stack):
    with httpx.Client(base_url=serve_stack.base_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def model_id(http) -> str:
    """What a client reads from GET /v1/models before asking for it by name."""
    r = http.get("/v1/models")
    assert r.status_code == 200, r.text
    return r.json()["data"][0]["id"]


def tei_scores(http: httpx.Client, query: str, texts: list[str], **options) -> dict[int, float]:
    """The TEI client: POST /rerank {query, texts}, a best-first list of {index, score}."""
    r = http.post("/rerank", json={"query": query, "texts": texts, **options})
    assert r.status_code == 200, r.text
    ranks = r.json()
    assert isinstance(ranks, list) and sorted(x["index"] for x in ranks) == list(range(len(texts)))
    assert [x["score"] for x in ranks] == sorted((x["score"] for x in ranks), reverse=True)
    return {x["index"]: x["score"] for x in ranks}


def assert_ranked_like(results: list[tuple[int, float]], want: dict[int, float], top_n: int | None = None) -> None:
    """(index, score) pairs: the reference's best ``top_n``, best first, same scores."""
    best = sorted(want, key=lambda i: -want[i])[:top_n]
    assert [i for i, _ in results] == best, (results, want)
    for i, score in results:
        assert score == pytest.approx(want[i], abs=1e-6)


def test_cohere_client_v2_rerank(serve_stack, http, model_id):
    co = cohere.ClientV2(base_url=serve_stack.base_url, api_key="unused-when-keys-are-off")
    got = co.rerank(model=model_id, query=QUERY, documents=DOCS, top_n=3, max_tokens_per_doc=512)
    assert_ranked_like([(r.index, r.relevance_score) for r in got.results], tei_scores(http, QUERY, DOCS), top_n=3)
    assert got.id and got.meta is not None
    assert got.meta.api_version.version == "2"
    assert got.meta.billed_units.search_units == 1
    assert got.meta.tokens.input_tokens > 0


def test_cohere_client_v1_rerank_with_documents(serve_stack, http):
    co = cohere.Client(base_url=serve_stack.base_url, api_key="unused-when-keys-are-off")
    got = co.rerank(query=QUERY, documents=[{"text": d} for d in DOCS], return_documents=True, max_chunks_per_doc=4)
    assert_ranked_like([(r.index, r.relevance_score) for r in got.results], tei_scores(http, QUERY, DOCS))
    assert all(r.document.text == DOCS[r.index] for r in got.results)
    assert got.meta.api_version.version == "1" and got.meta.tokens.input_tokens > 0
    plain = co.rerank(query=QUERY, documents=DOCS, top_n=2)  # strings, no model
    assert [r.index for r in plain.results] == [r.index for r in got.results][:2]
    assert all(r.document is None for r in plain.results)


def test_cohere_client_unknown_model_is_not_found(serve_stack):
    co = cohere.ClientV2(base_url=serve_stack.base_url, api_key="x")
    with pytest.raises(cohere.errors.NotFoundError) as caught:
        co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    assert "GET /v1/models" in caught.value.body["error"]


def test_tei_client_shape_and_options(http):
    want = tei_scores(http, QUERY, DOCS)
    r = http.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True, "truncation_direction": "Left"})
    assert r.status_code == 200, r.text
    assert all(x["text"] == DOCS[x["index"]] for x in r.json())
    assert {x["index"]: x["score"] for x in r.json()} == pytest.approx(want, abs=1e-6)  # short texts: no cut
    assert int(r.headers["x-total-tokens"]) > 0


def test_litellm_posts_a_cohere_body_to_rerank(http, model_id):
    r = http.post("/rerank", json={"model": model_id, "query": QUERY, "documents": DOCS, "top_n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_ranked_like([(x["index"], x["relevance_score"]) for x in body["results"]], tei_scores(http, QUERY, DOCS), 2)
    assert body["meta"]["api_version"]["version"] and body["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_jina_and_vllm_bodies(http, model_id, path):
    """Jina: {model, query, documents, top_n, return_documents} -> usage.total_tokens; vLLM the same on /v2."""
    body = {"model": model_id, "query": QUERY, "documents": DOCS, "top_n": 4, "return_documents": True}
    r = http.post(path, json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert_ranked_like([(x["index"], x["relevance_score"]) for x in got["results"]], tei_scores(http, QUERY, DOCS), 4)
    assert all(x["document"]["text"] == DOCS[x["index"]] for x in got["results"])
    usage = got["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] == got["meta"]["tokens"]["input_tokens"] > 0
    assert usage["documents"] == len(DOCS) and 0 <= usage["cached_documents"] <= len(DOCS)
    assert got["model"] == model_id


def test_vllm_score_one_to_many_one_to_one_and_pairs(http, model_id):
    want = tei_scores(http, QUERY, DOCS)
    many = http.post("/score", json={"model": model_id, "text_1": QUERY, "text_2": DOCS})
    assert many.status_code == 200, many.text
    body = many.json()
    assert body["object"] == "list" and body["model"] == model_id and body["id"] and body["created"] > 0
    assert [d["index"] for d in body["data"]] == list(range(len(DOCS)))  # input order, as vLLM answers
    assert all(d["object"] == "score" and d["score"] == pytest.approx(want[d["index"]], abs=1e-6) for d in body["data"])
    assert body["usage"]["prompt_tokens"] > 0

    one = http.post("/score", json={"text_1": [QUERY], "text_2": DOCS[2]}).json()
    assert one["data"][0]["score"] == pytest.approx(want[2], abs=1e-6)

    other = "what colour is the sky"
    pairs = http.post("/score", json={"text_1": [QUERY, other, QUERY], "text_2": [DOCS[0], DOCS[1], DOCS[3]]})
    assert pairs.status_code == 200, pairs.text
    sky = tei_scores(http, other, [DOCS[1]])
    got = [d["score"] for d in pairs.json()["data"]]
    assert got == pytest.approx([want[0], sky[0], want[3]], abs=1e-6)


def test_models_and_info(http, serve_stack):
    models = http.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["object"] == "model"
    names = [m["id"] for m in models["data"]]
    assert serve_stack.settings.model.model in names  # the configured name is an alias of the served id
    info = http.get("/info").json()
    assert set(info) == {"model", "kind", "revision", "max_length", "device", "dtype", "fallback", "version"}
    assert info["model"] == names[0] and info["kind"] == "qwen3-reranker" and info["fallback"] is False
    assert info["device"] == "cpu" and info["dtype"] == "float32" and info["max_length"] >= 16


def test_request_id_is_honoured_echoed_and_made(http, model_id):
    sent = http.post(
        "/v2/rerank",
        json={"model": model_id, "query": QUERY, "documents": DOCS[:2]},
        headers={"X-Request-Id": "trace-42"},
    )
    assert sent.headers["x-request-id"] == "trace-42" and sent.json()["id"] == "trace-42"
    made = http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS[:2]})
    assert made.headers["x-request-id"] and made.json()["id"] == made.headers["x-request-id"]
    score = http.post("/score", json={"text_1": QUERY, "text_2": DOCS[:2]}, headers={"X-Request-Id": "s-1"})
    assert score.json()["id"] == "s-1"
    error = http.post("/v1/rerank", json={"query": QUERY}, headers={"X-Request-Id": "bad-1"})
    assert error.status_code == 422 and error.headers["x-request-id"] == "bad-1"


def test_instruction_on_every_scoring_route(http, model_id):
    want = tei_scores(http, QUERY, DOCS, instruction=INSTRUCTION)
    assert want != pytest.approx(tei_scores(http, QUERY, DOCS), abs=1e-6)  # the instruction matters
    for path in ("/v1/rerank", "/v2/rerank"):
        r = http.post(path, json={"model": model_id, "query": QUERY, "documents": DOCS, "instruction": INSTRUCTION})
        assert_ranked_like([(x["index"], x["relevance_score"]) for x in r.json()["results"]], want)
    score = http.post("/score", json={"text_1": QUERY, "text_2": DOCS, "instruction": INSTRUCTION}).json()
    assert [d["score"] for d in score["data"]] == pytest.approx([want[i] for i in range(len(DOCS))], abs=1e-6)


def test_token_usage_counts_the_texts_once_per_request(http, serve_stack):
    handle = serve_stack.handle()
    q, ins, *docs = handle.count_tokens.remote([QUERY, INSTRUCTION, *DOCS]).result(timeout_s=60)
    body = {"query": QUERY, "documents": DOCS, "instruction": INSTRUCTION}
    usage = http.post("/v1/rerank", json=body).json()["usage"]
    assert usage["prompt_tokens"] == sum(ins + q + d for d in docs)
    capped = http.post("/v1/rerank", json={**body, "max_tokens_per_doc": 2}).json()["usage"]
    assert capped["prompt_tokens"] == sum(ins + q + min(d, 2) for d in docs)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/rerank", {"query": "q", "documents": ["x"], "truncation_direction": "up"}, "truncation_direction"),
        ("/v2/rerank", {"query": "q", "documents": ["x"], "long_documents": "split"}, "long_documents"),
        ("/v2/rerank", {"query": "q", "documents": ["x"], "max_tokens_per_doc": 0}, "max_tokens_per_doc"),
        ("/rerank", {"query": "q", "texts": ["x"], "truncation_direction": "Middle"}, "truncation_direction"),
        ("/rerank", {"query": "q", "documents": ["x"], "long_documents": 3}, "long_documents"),
        ("/score", {"text_1": "q", "text_2": ["x"], "max_tokens_per_doc": -1}, "max_tokens_per_doc"),
        ("/score", {"text_1": ["a", "b"], "text_2": ["x", "y", "z"]}, "1:1, 1:N or N:N"),
        ("/score", {"text_1": "q", "text_2": []}, "text_2"),
        ("/score", {"text_1": "q"}, "text_2"),
    ],
)
def test_bad_options_are_422_naming_the_field(http, path, body, field):
    r = http.post(path, json=body)
    assert r.status_code == 422, r.text
    assert field in r.json()["error"] or field in str(r.json()["detail"]), r.text


def test_long_document_options_pass_through(http):
    """Valid options reach the scoring core: a cap changes a long document's score; chunk mode names windows."""
    long_doc = "bananas are yellow. " + "filler words about nothing in particular. " * 30
    plain = tei_scores(http, QUERY, [long_doc])[0]
    capped = tei_scores(http, QUERY, [long_doc], max_tokens_per_doc=4)[0]
    assert capped != pytest.approx(plain, abs=1e-9)
    for path, body in (
        ("/v1/rerank", {"query": QUERY, "documents": [long_doc, "x"], "long_documents": "chunk"}),
        (
            "/rerank",
            {"query": QUERY, "texts": [long_doc, "x"], "long_documents": "chunk", "truncation_direction": "Right"},
        ),
    ):
        r = http.post(path, json=body)
        assert r.status_code == 200, r.text
        items = r.json()["results"] if path == "/v1/rerank" else r.json()
        assert all(isinstance(x["chunk"], int) and x["chunk"] >= 0 for x in items), items
    plain_items = http.post("/v1/rerank", json={"query": QUERY, "documents": ["x"]}).json()["results"]
    assert "chunk" not in plain_items[0]


def test_openapi_lists_every_route_with_an_example_body(http):
    spec = http.get("/openapi.json").json()
    paths = spec["paths"]
    for route in (
        "/v1/rerank",
        "/v2/rerank",
        "/rerank",
        "/score",
        "/v1/models",
        "/info",
        "/healthz",
        "/readyz",
        "/metrics",
        "/playground",
    ):
        assert route in paths, route
    posts = {p: ops["post"] for p, ops in paths.items() if "post" in ops}
    assert set(posts) == {"/v1/rerank", "/v2/rerank", "/rerank", "/score"}
    for path, op in posts.items():
        examples = op["requestBody"]["content"]["application/json"].get("examples")
        assert examples and all(e.get("value") for e in examples.values()), path
        for name, example in examples.items():  # every example is a body the route accepts
            r = http.post(
                path, json={**example["value"], "model": None} if "model" in example["value"] else example["value"]
            )
            assert r.status_code == 200, (path, name, r.text)
    assert "401" in posts["/v2/rerank"]["responses"]


def test_token_counter_asks_once_per_new_text():
    import asyncio

    from serve_app.http.tokens import TokenCounter

    calls: list[list[str]] = []

    async def count(texts: list[str]) -> list[int]:
        calls.append(texts)
        return [len(t.split()) for t in texts]

    counter = TokenCounter(count, capacity=3)
    assert asyncio.run(counter.counts(["a b", "c", "a b"])) == {"a b": 2, "c": 1}
    assert asyncio.run(counter.counts(["c", "a b"])) == {"c": 1, "a b": 2} and len(calls) == 1  # remembered
    asyncio.run(counter.counts(["d", "e f"]))  # over capacity: "c", the least recently used, is dropped
    assert calls[-1] == ["d", "e f"]
    asyncio.run(counter.counts(["a b", "c"]))
    assert calls[-1] == ["c"]
