"""Several models at once: two tiny models, each its own Reranker deployment with its own replicas,
routed by the request's or job's `model` (name, id or alias) and by the feed's default model, with
their scores kept apart in the cache. Real Ray Serve, real Kafka, real Redis."""

from __future__ import annotations

import json

import httpx
import pytest

from schemas.messages import ErrorKind
from schemas.settings import DEFAULT_MODEL, ExtraModelSettings, Settings
from tests.fixtures_serve import ServeStack, serve_settings
from tests.fixtures_worker import make_jobs

pytestmark = pytest.mark.slow

APP = "rerank-two-models"


def test_model_names_resolve_and_feeds_default():
    s = Settings.model_validate(
        {
            "model": {"model": "/a", "allowed_models": ["a-alias"], "extra_models": {"mod": {"model": "/b", "aliases": ["b"]}}},
            "kafka": {"feeds": {"rec": {"topic": "r", "instruction": "i"}, "mod": {"topic": "m", "instruction": "i", "model": "b"}}},
        }
    )  # fmt: skip
    assert s.model.keys == [DEFAULT_MODEL, "mod"]
    assert [s.model.resolve(n, "served-a") for n in (None, "/a", "a-alias", "served-a", "mod", "/b", "b", "c")] == [
        *[DEFAULT_MODEL] * 4,
        *["mod"] * 3,
        None,
    ]
    assert (s.feed_model("rec"), s.feed_model("mod")) == (DEFAULT_MODEL, "mod")
    assert (s.reranker_deployment(DEFAULT_MODEL), s.reranker_deployment("mod")) == ("Reranker", "Reranker-mod")


@pytest.fixture(scope="module")
def model_b_dir(tmp_path_factory):
    from tests.support.synthetic_models import build_tiny_qwen3_reranker

    return build_tiny_qwen3_reranker(tmp_path_factory.mktemp("tiny-qwen3-b"), seed=1)


@pytest.fixture(scope="module")
def two_models(serve_stack, tiny_qwen_dir, model_b_dir, redis_url):
    """The default tiny model (1 replica) and model B as extra model `mod` (2 replicas), in one app."""
    from serve_app import runtime

    base = serve_settings(tiny_qwen_dir, redis_url, APP, f"/{APP}", serve_stack.settings.serve.http_port)
    extra = ExtraModelSettings(
        model=str(model_b_dir), aliases=["qwen-b"], device="cpu", dtype="float32", min_replicas=2, max_replicas=2
    )
    settings = base.model_copy(update={"model": base.model.model_copy(update={"extra_models": {"mod": extra}})})
    started = runtime.start(settings)
    yield ServeStack(settings, f"{serve_stack.base_url}/{APP}")
    runtime.stop(started)


def _engine(path):
    from schemas.settings import ModelSettings
    from serve_app.engine import load_engine

    return load_engine(ModelSettings(model=str(path), device="cpu", dtype="float32"))


def test_each_model_has_its_own_deployment_and_replicas(two_models):
    from serve_app import runtime

    assert runtime.replica_count(two_models.settings, DEFAULT_MODEL) == 1
    assert runtime.replica_count(two_models.settings, "mod") == 2


def test_http_routes_by_model_and_keeps_cached_scores_apart(two_models, tiny_qwen_dir, model_b_dir):
    docs = ["a quiet river at dawn", "cheap flights to the city", "a violin concert tonight"]
    body = {"query": "music in the evening", "documents": docs, "instruction": "find events"}
    engines = {"default": _engine(tiny_qwen_dir), "qwen-b": _engine(model_b_dir)}
    with httpx.Client(base_url=two_models.base_url, timeout=60) as http:
        served = {m["id"] for m in http.get("/v1/models").json()["data"]}
        assert {str(tiny_qwen_dir), str(model_b_dir), "qwen-b", "mod"} <= served
        got = {}
        for name in ("qwen-b", None, "qwen-b"):
            resp = http.post("/v1/rerank", json={**body, **({"model": name} if name else {})})
            assert resp.status_code == 200, resp.text
            got.setdefault(name or "default", []).append(resp.json())
        missing = http.post("/v1/rerank", json={**body, "model": "no-such-model"})
    assert missing.status_code == 404 and "qwen-b" in missing.json()["error"]
    for name, answers in got.items():
        want = engines[name].score(body["query"], docs, instruction=body["instruction"])
        for item in answers[0]["results"]:
            assert item["relevance_score"] == pytest.approx(want[item["index"]], abs=1e-4), name
    (b_first, b_again), (a_first,) = got["qwen-b"], got["default"]
    assert b_first["model"] == str(model_b_dir) and a_first["model"] == str(tiny_qwen_dir)
    assert b_again["usage"]["cached_documents"] == len(docs)  # B's own scores came back from the cache
    assert a_first["usage"]["cached_documents"] == 0  # ... and are never served for model A


def test_kafka_jobs_route_by_job_field_and_feed_default(two_models, make_pipeline, tiny_qwen_dir, model_b_dir):
    s = two_models.settings
    feeds = {
        "recommendation": {"topic": "", "instruction": "Given a user's interest, retrieve items the user likes"},
        "moderation": {"topic": "", "instruction": "Judge whether the text violates the policy", "model": "mod"},
    }
    p = make_pipeline(
        RERANK_SERVE_APP_NAME=s.serve.app_name,
        RERANK_MODEL_EXTRA_MODELS=json.dumps({"mod": s.model.extra_models["mod"].model_dump(exclude_none=True)}),
    )
    for name, feed in feeds.items():  # the pipeline's own topics, with the moderation feed on model B
        feed["topic"] = p.settings.kafka.feeds[name].topic
    p.env["RERANK_KAFKA_FEEDS"] = json.dumps(feeds)
    rec = make_jobs("mm-rec", 2, docs=5)
    (mod,) = make_jobs("mm-mod", 1, docs=5, feed="moderation")
    by_alias = make_jobs("mm-alias", 3, docs=5, model="qwen-b")[2]  # texts depend on the index: 2 is unused
    same_as_rec0_on_b = rec[0].model_copy(update={"job_id": "mm-rec0-on-b", "model": "mod"})
    by_alias_again = by_alias.model_copy(update={"job_id": "mm-alias-again", "model": str(model_b_dir)})
    (unknown,) = make_jobs("mm-unknown", 1, docs=3, model="no-such-model")
    w = p.start_worker()
    p.produce([*rec, mod, by_alias, unknown])
    w.wait_ready(90)
    p.wait_for([j.job_id for j in [*rec, mod, by_alias]], timeout=90, dlq=1)
    p.produce([same_as_rec0_on_b, by_alias_again])
    p.wait_for([same_as_rec0_on_b.job_id, by_alias_again.job_id], timeout=60)

    engines = {str(tiny_qwen_dir): _engine(tiny_qwen_dir), str(model_b_dir): _engine(model_b_dir)}
    expected_model = {**{j.job_id: str(tiny_qwen_dir) for j in rec}, mod.job_id: str(model_b_dir)}
    expected_model |= {by_alias.job_id: str(model_b_dir), same_as_rec0_on_b.job_id: str(model_b_dir)}
    for job in [*rec, mod, by_alias, same_as_rec0_on_b]:
        (res,) = p.results[job.job_id]
        assert res.model.id == expected_model[job.job_id], job.job_id
        scores = engines[res.model.id].score(
            job.query, [c.text for c in job.candidates], feeds[job.feed]["instruction"]
        )
        for r in res.ranked:
            assert r.score == pytest.approx(scores[int(r.id[1:])], abs=1e-4), job.job_id
    assert p.results[same_as_rec0_on_b.job_id][0].cached == 0  # model A's cached scores are not B's
    again = p.results[by_alias_again.job_id][0]  # B's own scores, asked for by another of its names
    assert again.cached == 5 and again.model.id == str(model_b_dir)
    (letter,) = p.dead_letters
    assert letter.error_kind == ErrorKind.unknown_model and letter.job_id == unknown.job_id
    assert "qwen-b" in letter.reason
