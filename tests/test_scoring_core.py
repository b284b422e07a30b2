"""The scoring core both doors call: one lookup round trip, only misses scored, fill, order, chunks."""

from __future__ import annotations

import asyncio

import pytest

from schemas.scoring import ModelInfo, ScoreRequest
from serve_app.scoring import ScoringCore

INFO = ModelInfo(id="m", revision="r", kind="seq-cls", device="cpu", dtype="float32", max_length=64, fallback=False)


class DictCache:
    """In-memory stand-in with the ScoreCache surface the core uses (Redis itself: test_cache.py)."""

    enabled = True

    def __init__(self):
        self.data: dict[tuple, tuple[float, int | None]] = {}
        self.round_trips = 0

    def lookup_entries(self, queries):
        self.round_trips += 1
        return [
            [self.data.get((q.fingerprint, q.kind, q.instruction, q.query, d, q.mode)) for d in q.documents]
            for q in queries
        ]

    def store(self, fingerprint, kind, instruction, query, documents, scores, *, mode="", chunks=None):
        self.round_trips += 1
        for i, (d, s) in enumerate(zip(documents, scores)):
            self.data[(fingerprint, kind, instruction, query, d, mode)] = (s, None if chunks is None else chunks[i])


class CountingClient:
    def __init__(self, wrong_length: bool = False):
        self.requests: list[ScoreRequest] = []
        self.wrong_length = wrong_length

    def info(self):
        return INFO

    def score(self, request):
        self.requests.append(request)
        out = [len(d) / 100 for d in request.documents]
        return out[:-1] if self.wrong_length else out

    async def ascore(self, request):
        return self.score(request)


def test_only_misses_reach_the_model_and_the_cache_is_filled():
    cache, client = DictCache(), CountingClient()
    core = ScoringCore(cache, chunk_documents=2)  # type: ignore[arg-type]
    docs = ["a", "bbb", "cc", "dddd", "e"]
    first = core.score(INFO, client, ScoreRequest("q", docs, "ins"))
    assert first.cached == 0 and [len(r.documents) for r in client.requests] == [2, 2, 1]
    assert first.order == [3, 1, 2, 0, 4]  # best first, ties in input order
    client.requests.clear()
    again = core.score(INFO, client, ScoreRequest("q", docs + ["new one"], "ins"))
    assert again.cached == 5 and [r.documents for r in client.requests] == [["new one"]]
    assert again.scores[:5] == first.scores


def test_one_round_trip_for_many_requests_and_instruction_is_part_of_the_key():
    cache, client = DictCache(), CountingClient()
    core = ScoringCore(cache)  # type: ignore[arg-type]
    core.score(INFO, client, ScoreRequest("q", ["x"], "ins-1"))
    cache.round_trips = 0
    lookups = core.lookup_many(INFO, [ScoreRequest("q", ["x"], "ins-1"), ScoreRequest("q", ["x"], "ins-2")])
    assert cache.round_trips == 1
    assert [lk.hits for lk in lookups] == [1, 0]


def test_raw_scores_bypass_the_cache():
    cache, client = DictCache(), CountingClient()
    core = ScoringCore(cache)  # type: ignore[arg-type]
    core.score(INFO, client, ScoreRequest("q", ["x"], "i", raw_scores=True))
    assert cache.round_trips == 0 and cache.data == {}


def test_async_path_matches_sync_path():
    cache, client = DictCache(), CountingClient()
    core = ScoringCore(cache, chunk_documents=3)  # type: ignore[arg-type]
    req = ScoreRequest("q", [f"doc {i}" * i for i in range(7)], "i")
    got = asyncio.run(core.ascore(INFO, client, req))
    want = ScoringCore(None, chunk_documents=3).score(INFO, CountingClient(), req)
    assert got.scores == want.scores and got.order == want.order
    assert asyncio.run(core.ascore(INFO, client, req)).cached == 7


def test_a_client_returning_the_wrong_number_of_scores_is_an_error():
    with pytest.raises(RuntimeError, match="returned 1 scores for 2 documents"):
        ScoringCore(None).score(INFO, CountingClient(wrong_length=True), ScoreRequest("q", ["a", "b"]))


def test_empty_request():
    scored = ScoringCore(DictCache()).score(INFO, CountingClient(), ScoreRequest("q", []))  # type: ignore[arg-type]
    assert scored.scores == [] and scored.order == [] and scored.cached == 0
