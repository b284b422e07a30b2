"""Long documents on HTTP and Kafka alike: truncation direction, token caps and chunk mode.

- the window plan (pure logic, property-tested): windows cover the kept tokens, overlap as promised;
- a real model (the packaged all-MiniLM-L6-v2, whose scores mean relevance): the one relevant
  sentence at the end of a ~20,000-token document is found in chunk mode and missed when truncated;
  truncating on the left keeps the end, on the right the start;
- parity: every window scored inside a chunk-mode call equals the plain official recipe on that
  window's text (tiny Qwen3, fp32), with the job's prefix run once for all windows;
- every kind honours the modes (the windowing is the engine's, not a kind's);
- the Redis cache keeps modes apart and remembers the best window; one MGET per lookup;
- Kafka: job fields validated (bad values -> dead letter naming the field), per-feed defaults, and
  one chunk-mode job through a real worker + Serve whose result names each candidate's best window.
"""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import ErrorKind, RerankJob
from schemas.scoring import ChunkedScores, ModelInfo, ScoreRequest
from schemas.settings import ModelSettings, RedisSettings, Settings
from serve_app.engine import load_engine
from serve_app.engine.batching import common_prefix_length
from serve_app.engine.long_documents import (
    MAX_OVERLAP_TOKENS,
    WindowPlan,
    kept_span,
    overlap_tokens,
    window_spans,
)
from serve_app.engine.prompt import QWEN3_PREFIX, qwen3_body
from serve_app.scoring import ScoreCache, ScoringCore
from serve_app.scoring.client import EngineScoreClient
from tests.support.reference_recipe import official_recipe_scores
from workers.decode import Rejection, decode_job

QUERY = "At what temperature does water boil?"
NEEDLE = "Water boils at 100 degrees Celsius at sea level, which is its boiling point."
FILLER = [
    "The committee reviewed the quarterly budget and approved new spending on road maintenance.",
    "Medieval castles were often built on hills to make them easier to defend.",
    "The orchestra rehearsed the symphony for three weeks before the premiere.",
    "Tax forms must be submitted before the end of April each year.",
    "The train timetable changed in the autumn to add more evening services.",
    "Gardeners recommend pruning roses in late winter.",
]


def filler(tokenizer, tokens: int) -> str:
    """Unrelated sentences, at least ``tokens`` tokens long."""
    per_round = len(tokenizer(" ".join(FILLER), add_special_tokens=False)["input_ids"])
    return " ".join(FILLER * (tokens // per_round + 1))


def plan_of(engine, request: ScoreRequest) -> WindowPlan:
    return engine._plan(request)


def window_scores(engine, monkeypatch, request: ScoreRequest) -> tuple[ChunkedScores, list[float]]:
    """A chunk-mode answer and the raw score of every window the scorer saw inside that same call."""
    seen: list[list[list[float]]] = []
    real = engine._scorer.raw_scores

    def spy(jobs):
        out = real(jobs)
        seen.append(out)
        return out

    monkeypatch.setattr(engine._scorer, "raw_scores", spy)
    got = engine.score_many([request])[0]
    monkeypatch.undo()
    assert isinstance(got, ChunkedScores) and len(seen) == 1
    return got, seen[0][0]


# -- the window plan: pure logic ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(1, 600), st.data())
def test_windows_cover_the_kept_tokens_and_overlap_as_promised(lo, n, window, data):
    overlap = data.draw(st.integers(0, window - 1))
    spans = window_spans(lo, lo + n, window, overlap)
    assert spans[0][0] == lo and spans[-1][1] == lo + n
    if n <= window:
        assert spans == [(lo, lo + n)]
        return
    stride = window - overlap
    assert len(spans) == -(-(n - window) // stride) + 1  # the fewest windows that keep the overlap
    assert all(b - a == window for a, b in spans)
    for (a1, b1), (a2, _) in zip(spans, spans[1:]):
        assert a1 < a2 and b1 - a2 >= overlap  # consecutive windows share at least `overlap` tokens


@given(st.integers(0, 10_000), st.none() | st.integers(1, 20_000), st.sampled_from(["left", "right"]))
def test_the_cap_keeps_the_chosen_end(n, cap, direction):
    lo, hi = kept_span(n, cap, direction)
    assert hi - lo == (n if cap is None else min(n, cap))
    assert (lo == 0) if direction == "right" else (hi == n)


def test_overlap_is_a_quarter_of_the_window_at_most_256_tokens():
    assert overlap_tokens(100) == 25 and overlap_tokens(8192) == MAX_OVERLAP_TOKENS == 256


def test_reduce_keeps_the_best_window_and_the_earliest_of_ties():
    plan = WindowPlan(["a", "b", "c", "d", "e", "f"], [3, 1, 2], chunked=True)
    assert plan.reduce([0.1, 0.9, 0.9, 0.3, 0.5, 0.2]) == ChunkedScores([0.9, 0.3, 0.5], [1, 0, 0])
    assert WindowPlan(["a", "b"], [1, 1], chunked=False).reduce([0.2, 0.1]) == [0.2, 0.1]
    with pytest.raises(RuntimeError, match="1 scores for 2 windows"):
        WindowPlan(["a", "b"], [2], chunked=True).reduce([0.5])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("truncation_direction", "Left"),
        ("long_documents", "split"),
        ("max_tokens_per_doc", 0),
        ("max_tokens_per_doc", True),
        ("max_tokens_per_doc", 2.5),
    ],
)
def test_score_request_refuses_unknown_handling(field, value):
    with pytest.raises(ValueError, match=field):
        ScoreRequest("q", ["d"], **{field: value})


# -- a real model: the needle at the end of ~20,000 tokens ----------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    """The packaged all-MiniLM-L6-v2: a 256-token window, scores = (cosine + 1) / 2, they mean relevance."""
    return load_engine(ModelSettings(model="auto"))


def test_needle_at_the_end_of_20k_tokens_is_found_in_chunk_mode_and_missed_when_truncated(minilm, monkeypatch):
    tok = minilm._tokenizer
    doc = filler(tok, 20_000) + " " + NEEDLE
    assert len(tok(doc, add_special_tokens=False)["input_ids"]) >= 20_000

    (truncated,) = minilm.score_many([ScoreRequest(QUERY, [doc])])[0]
    chunked, windows = window_scores(minilm, monkeypatch, ScoreRequest(QUERY, [doc], long_documents="chunk"))
    (alone,) = minilm.score(QUERY, [NEEDLE])

    last = len(windows) - 1
    assert last >= 80, "a 20k-token document in 256-token windows"
    assert chunked.chunks == [last], "the best window is the last one, where the needle is"
    assert chunked.scores[0] == pytest.approx(minilm._scorer.activate(windows[last]))
    others = max(windows[:last])
    assert windows[last] - others > 0.1, f"the needle's window stands out: {windows[last]:.3f} vs {others:.3f}"
    assert chunked.scores[0] - truncated > 0.05, (chunked, truncated)  # found when chunked, missed when truncated
    assert truncated == pytest.approx(minilm._scorer.activate(windows[0]), abs=0.02)  # truncate ~ the first window
    assert alone > chunked.scores[0]  # the needle alone is more relevant than its window: sanity of the model


def test_truncation_direction_keeps_the_start_or_the_end(minilm):
    tok = minilm._tokenizer
    body = filler(tok, 300)  # longer than the 256-token window
    head_needle, tail_needle = NEEDLE + " " + body, body + " " + NEEDLE
    short = NEEDLE + " " + FILLER[0] + " " + FILLER[1]  # fits one window: only a cap cuts it

    def scores(direction: str, cap: int | None = None) -> list[float]:
        req = ScoreRequest(
            QUERY, [head_needle, tail_needle, short], truncation_direction=direction, max_tokens_per_doc=cap
        )
        out = minilm.score_many([req])[0]
        assert isinstance(out, list)
        return out

    right, left = scores("right"), scores("left")
    assert right[0] - right[1] > 0.05 and left[1] - left[0] > 0.05  # the kept end holds the needle
    assert right[2] == pytest.approx(left[2]), "a document that fits is not cut"
    capped_right, capped_left = scores("right", 30), scores("left", 30)
    assert capped_right[2] - capped_left[2] > 0.1  # the cap keeps the needle at the start, or drops it


# -- parity with the plain recipe, prefix reuse (tiny Qwen3, fp32) -------------------------------------------------

MAX_LENGTH = 160


@pytest.fixture(scope="module")
def qwen(tiny_qwen_dir):
    return load_engine(
        ModelSettings(model=str(tiny_qwen_dir), max_length=MAX_LENGTH, max_batch_tokens=1024, dtype="float32")
    )


@pytest.fixture(scope="module")
def plain(tiny_qwen_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_qwen_dir)


LONG_DOCS = [
    " ".join(f"Paris is the capital of France {i}. The quick brown fox jumps over the lazy dog." for i in range(25)),
    "Short document about machine learning.",
    "東京は日本の首都です。 " * 60 + "Emoji 🙂🚀🔥 at the end.",
]


def test_every_window_matches_the_plain_recipe_and_the_prefix_runs_once(qwen, plain, monkeypatch):
    instruction = "Judge whether the document mentions a capital city"
    req = ScoreRequest("capital of France", LONG_DOCS, instruction, long_documents="chunk")
    plan = plan_of(qwen, req)
    assert plan.counts[0] >= 5 and plan.counts[1] == 1 and plan.counts[2] >= 2
    model, tok = plain
    for text, doc in zip(plan.texts[: plan.counts[0]], [LONG_DOCS[0]] * plan.counts[0]):
        assert text in doc  # a window is a piece of the document's text
        assert len(tok(text, add_special_tokens=False)["input_ids"]) <= qwen._scorer.document_budget(
            req.query, instruction
        ), "a window fits: the model reads all of it"

    embedded: list[int] = []
    hook = qwen._scorer.model.get_input_embeddings().register_forward_pre_hook(
        lambda m, args: embedded.append(args[0].numel())
    )
    try:
        got, raws = window_scores(qwen, monkeypatch, req)
    finally:
        hook.remove()

    want = [official_recipe_scores(model, tok, req.query, [t], instruction, MAX_LENGTH)[1][0] for t in plan.texts]
    diff = max(abs(a - b) for a, b in zip(raws, want))
    assert diff <= 1e-4, f"window logits differ from the recipe by {diff}"
    assert max(want) - min(want) > 0.5  # scores that move: the comparison can fail

    k = 0
    for i, n in enumerate(plan.counts):
        best = max(range(n), key=lambda j: (raws[k + j], -j))
        assert got.chunks[i] == best
        assert got.scores[i] == pytest.approx(qwen._scorer.activate(raws[k + best]), abs=1e-9)
        k += n

    seqs = qwen._scorer.encode(req.query, plan.texts, instruction)
    head = QWEN3_PREFIX + qwen3_body(req.query, "", instruction)  # the prompt up to the document
    prompt_prefix = len(tok(head, add_special_tokens=False)["input_ids"]) - 2  # less the tokens at the seam
    assert common_prefix_length(seqs) >= prompt_prefix  # every window starts with the job's prefix...
    assert sum(embedded) <= sum(len(s) for s in seqs) - (len(seqs) - 1) * prompt_prefix  # ...run only once


@pytest.mark.parametrize(
    ("direction", "cap"), [("right", 25), ("left", 25), ("left", None)]
)  # (right, no cap) is the kind's own truncation: test_engine_qwen.py
def test_a_cut_never_touches_the_prompt_and_keeps_the_chosen_end(qwen, direction, cap):
    doc = LONG_DOCS[0]
    req = ScoreRequest("capital", [doc], truncation_direction=direction, max_tokens_per_doc=cap)
    (text,) = plan_of(qwen, req).texts
    assert (doc.startswith(text) if direction == "right" else doc.endswith(text)) and len(text) < len(doc)
    if cap is not None:
        assert len(qwen._tokenizer(text, add_special_tokens=False)["input_ids"]) <= cap
    # The cut document scores exactly like that text sent as is: instruction and query were left whole.
    assert qwen.score_many([req])[0] == qwen.score("capital", [text])


# -- every kind ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind_dir", ["tiny_seq_cls_dir", "tiny_qwen_seq_cls_dir", "tiny_bi_encoder_dir"])
def test_every_kind_chunks_and_cuts_alike(kind_dir, request):
    engine = load_engine(
        ModelSettings(
            model=str(request.getfixturevalue(kind_dir)), max_length=128, max_batch_tokens=1024, dtype="float32"
        )
    )
    doc = filler(engine._tokenizer, 400)
    docs = [doc, "a short one", NEEDLE + " " + doc]
    req = ScoreRequest("boiling water", docs, long_documents="chunk")
    plan = plan_of(engine, req)
    assert plan.counts[0] >= 5 and plan.counts[1] == 1
    got = engine.score_many([req])[0]
    assert isinstance(got, ChunkedScores)
    windows = engine.score("boiling water", plan.texts)
    k = 0
    for i, n in enumerate(plan.counts):
        group = windows[k : k + n]
        assert got.scores[i] == pytest.approx(max(group), abs=1e-5) and group[got.chunks[i]] == pytest.approx(
            max(group), abs=1e-5
        )
        k += n
    left = ScoreRequest("boiling water", docs, truncation_direction="left")
    tails = plan_of(engine, left).texts
    assert all(d.endswith(t) for d, t in zip(docs, tails)) and len(tails[0]) < len(doc)
    assert engine.score_many([left])[0] == pytest.approx(engine.score("boiling water", tails), abs=1e-5)


# -- the cache keeps modes apart -------------------------------------------------------------------------------------


class CountingEngineClient(EngineScoreClient):
    def __init__(self, engine):
        super().__init__(engine)
        self.documents = 0

    def score(self, request):
        self.documents += len(request.documents)
        return super().score(request)


def test_the_cache_keeps_modes_apart_and_remembers_the_best_window(qwen, redis_url):
    prefix = f"test:ld:{uuid.uuid4().hex[:8]}:"
    cache = ScoreCache(RedisSettings(url=redis_url, key_prefix=prefix))
    mgets = []
    real_mget = cache._client.mget  # type: ignore[union-attr]
    cache._client.mget = lambda keys: mgets.append(len(keys)) or real_mget(keys)  # type: ignore[union-attr]
    core, client = ScoringCore(cache), CountingEngineClient(qwen)
    info: ModelInfo = qwen.info
    docs = [LONG_DOCS[0], LONG_DOCS[2], "short"]
    modes = {
        "truncate-right": {},
        "truncate-left": {"truncation_direction": "left"},
        "capped": {"max_tokens_per_doc": 20},
        "chunk": {"long_documents": "chunk"},
        "chunk-capped-left": {"long_documents": "chunk", "max_tokens_per_doc": 60, "truncation_direction": "left"},
    }
    requests = {name: ScoreRequest("capital of France", docs, "ins", **kw) for name, kw in modes.items()}
    try:
        first = {}
        for name, req in requests.items():
            first[name] = core.score(info, client, req)
            assert first[name].cached == 0, f"{name}: another mode's scores were served"
        assert client.documents == len(modes) * len(docs)
        assert len({tuple(s.scores[:2]) for s in first.values()}) == len(modes)  # the modes do score differently
        assert first["chunk"].chunks is not None and first["truncate-left"].chunks is None

        mgets.clear()
        lookups = core.lookup_many(info, list(requests.values()))
        assert mgets == [len(modes) * len(docs)], "one MGET for every request of every mode"
        for name, lookup in zip(requests, lookups):
            again = core.complete(info, client, lookup)
            assert again.cached == len(docs) and again.scores == first[name].scores, name
            assert again.chunks == first[name].chunks, name
        assert client.documents == len(modes) * len(docs), "nothing was scored twice"
    finally:
        keys = list(cache._client.scan_iter(match=prefix + "*"))  # type: ignore[union-attr]
        if keys:
            cache._client.delete(*keys)  # type: ignore[union-attr]
        cache.close()


# -- Kafka: job fields, feed defaults, one job end to end ------------------------------------------------------------

SETTINGS = Settings()


def job(**kw) -> bytes:
    base = {"job_id": "j1", "feed": "moderation", "query": "q", "candidates": [{"id": "a", "text": "x"}]}
    return json.dumps({**base, **kw}).encode()


GOOD = {
    "long_documents": st.sampled_from(["truncate", "chunk", None]),
    "truncation_direction": st.sampled_from(["left", "right"]),
    "max_tokens_per_doc": st.none() | st.integers(1, 2**63 - 1),
}
BAD = {
    "long_documents": st.text(max_size=10).filter(lambda v: v not in ("truncate", "chunk"))
    | st.integers()
    | st.booleans(),
    "truncation_direction": st.text(max_size=10).filter(lambda v: v not in ("left", "right"))
    | st.none()
    | st.integers(),
    "max_tokens_per_doc": st.integers(max_value=0)
    | st.integers(min_value=2**63)
    | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans(),
}


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(GOOD)), st.data())
def test_job_fields_accept_what_they_document(field, data):
    value = data.draw(GOOD[field])
    out = decode_job(job(**{field: value}), SETTINGS.kafka.feeds["moderation"].topic, SETTINGS)
    assert isinstance(out, RerankJob) and getattr(out, field) == value


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(BAD)), st.data())
def test_bad_job_fields_become_dead_letters_naming_the_field(field, data):
    value = data.draw(BAD[field])
    out = decode_job(job(**{field: value}), SETTINGS.kafka.feeds["moderation"].topic, SETTINGS)
    assert isinstance(out, Rejection), (field, value, out)
    assert out.kind is ErrorKind.schema_violation and out.reason.startswith(field), out.reason
    assert out.job_id == "j1"


def test_feeds_default_the_mode_and_jobs_override_it():
    from workers.processing import JobProcessor

    class Info:
        def info(self):
            return ModelInfo("m", None, "qwen3-reranker", "cpu", "float32", 128, False)

    assert SETTINGS.kafka.feeds["moderation"].long_documents == "chunk"
    assert SETTINGS.kafka.feeds["recommendation"].long_documents == "truncate"
    proc = JobProcessor(SETTINGS, Info(), ScoringCore(None), "w")  # type: ignore[arg-type]

    def mode(raw: bytes, feed: str) -> str:
        decoded = decode_job(raw, SETTINGS.kafka.feeds[feed].topic, SETTINGS)
        assert isinstance(decoded, RerankJob)
        return proc.request_for(decoded).long_documents

    assert mode(job(), "moderation") == "chunk"
    assert mode(job(long_documents="truncate"), "moderation") == "truncate"
    assert mode(job(feed="recommendation"), "recommendation") == "truncate"
    req = proc.request_for(RerankJob.model_validate(json.loads(job(truncation_direction="left", max_tokens_per_doc=7))))
    assert (req.truncation_direction, req.max_tokens_per_doc) == ("left", 7)


def test_a_chunk_mode_job_through_worker_and_serve_names_the_best_window(make_pipeline, worker_serve, unique_name):
    """The moderation feed defaults to chunk mode; its result names each candidate's best window."""
    feeds = {
        "recommendation": {"topic": f"{unique_name}.rec", "instruction": "Find items the user likes"},
        "moderation": {
            "topic": f"{unique_name}.mod",
            "instruction": "Judge whether the text violates the policy",
            "long_documents": "chunk",
        },
    }
    p = make_pipeline(RERANK_KAFKA_FEEDS=json.dumps(feeds), RERANK_LIMITS_MAX_DOCUMENT_CHARS="100000")
    engine = worker_serve.direct_engine()
    long_doc = " ".join(f"The quick brown fox {i} jumps over the lazy dog." for i in range(700))  # ~10k tokens
    texts = {"long": long_doc, "short": "a short post"}
    query = "no spam or scams"

    def make_job(job_id: str, feed: str, **kw) -> RerankJob:
        cands = [{"id": k, "text": v} for k, v in texts.items()]
        return RerankJob.model_validate({"job_id": job_id, "feed": feed, "query": query, "candidates": cands, **kw})

    jobs = [make_job("chunked", "moderation"), make_job("truncated", "moderation", long_documents="truncate")]
    w = p.start_worker()
    w.wait_ready()
    p.produce(jobs)
    p.wait_for([j.job_id for j in jobs], timeout=120)

    want = engine.score_many(
        [ScoreRequest(query, list(texts.values()), feeds["moderation"]["instruction"], long_documents="chunk")]
    )[0]
    assert isinstance(want, ChunkedScores) and plan_of(
        engine, ScoreRequest(query, [long_doc], long_documents="chunk")
    ).counts == [2]
    result = p.results["chunked"][0]
    by_id = {c.id: c for c in result.ranked}
    for i, name in enumerate(texts):
        assert by_id[name].chunk == want.chunks[i]
        assert by_id[name].score == pytest.approx(want.scores[i], abs=1e-5)
    assert '"chunk":' in result.model_dump_json()
    truncated = p.results["truncated"][0]
    assert all(c.chunk is None for c in truncated.ranked) and '"chunk"' not in truncated.model_dump_json()
