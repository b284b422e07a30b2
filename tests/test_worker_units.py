"""Pure logic of the worker: offset tracking, decoding/validation, ranking (no services)."""

from __future__ import annotations

import json

import pytest

from schemas.messages import Candidate, ErrorKind, RerankJob, now_ms
from schemas.scoring import ChunkedScores, ModelInfo, ScoreRequest
from schemas.settings import LimitsSettings, Settings
from serve_app.scoring import ScoringCore
from serve_app.scoring.core import Lookup
from workers.decode import Rejection, decode_job
from workers.offsets import OffsetTracker
from workers.processing import JobProcessor, ranked

P = ("t", 0)


def test_commit_position_is_the_contiguous_done_prefix():
    t = OffsetTracker()
    for o in (5, 6, 7, 9):  # 8 skipped by the consumer (e.g. a transaction marker)
        t.start(P, o)
    assert t.to_commit() == {P: 5}  # nothing done: position is the first unfinished offset
    t.mark_committed({P: 5})
    t.done(P, 7)
    t.done(P, 9)
    assert t.to_commit() == {}  # 5 still open: must not move
    t.done(P, 5)
    assert t.to_commit() == {P: 6}
    t.done(P, 6)
    assert t.to_commit() == {P: 10}  # over the gap at 8
    t.mark_committed({P: 10})
    assert t.to_commit() == {}
    assert t.in_flight() == 0


def test_redelivered_and_revoked_offsets_are_ignored():
    t = OffsetTracker()
    t.start(P, 0)
    t.done(P, 0)
    t.start(P, 0)  # redelivery after a seek must not reopen it
    assert t.to_commit() == {P: 1}
    t.start(P, 1)
    t.forget([P])
    t.done(P, 1)  # ack for a revoked partition
    assert t.to_commit() == {} and t.in_flight() == 0


def _job(**kw) -> dict:
    base = {"job_id": "j1", "feed": "recommendation", "query": "q", "candidates": [{"id": "a", "text": "x"}]}
    base.update(kw)
    return base


def _decode(obj, settings=None, topic="rerank.jobs.recommendation"):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return decode_job(raw, topic, settings or Settings(), "served-model")


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"\xff\xfe\x00", ErrorKind.undecodable),
        (b"{not json", ErrorKind.invalid_json),
        (_job(candidates=[]), ErrorKind.schema_violation),
        (_job(candidates=[{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]), ErrorKind.duplicate_ids),
        (_job(feed="nope"), ErrorKind.unknown_feed),
        (_job(feed="moderation"), ErrorKind.unknown_feed),  # feed does not match its topic
        (_job(model="other/model"), ErrorKind.unknown_model),
        (_job(created_at=now_ms() - 10_000, deadline_ms=5), ErrorKind.deadline_expired),
        (_job(candidates=[{"id": str(i), "text": "x"} for i in range(4)]), ErrorKind.too_large),
        (_job(candidates=[{"id": "a", "text": "x" * 101}]), ErrorKind.too_large),
        (_job(query="q" * 101), ErrorKind.too_large),
    ],
)
def test_each_bad_input_kind_is_rejected_with_a_reason(payload, kind):
    settings = Settings(limits=LimitsSettings(max_documents=3, max_document_chars=100, max_query_chars=100))
    got = _decode(payload, settings)
    assert isinstance(got, Rejection), got
    assert got.kind == kind and got.reason


def test_valid_job_and_served_model_accepted():
    got = _decode(_job(model="served-model", deadline_ms=60_000))
    assert isinstance(got, RerankJob) and got.job_id == "j1"


def _scored(scores):
    return ScoringCore(None)._scored(Lookup(ScoreRequest("q", [""] * len(scores)), list(scores)))


def test_rank_orders_best_first_ties_in_input_order_and_top_k():
    job = RerankJob(
        job_id="j",
        feed="moderation",
        query="q",
        top_k=2,
        threshold=0.5,
        candidates=[Candidate(id=c, text=c) for c in "abcd"],
    )
    scored = _scored([0.2, 0.9, 0.2, 0.6])
    assert [(r["id"], r["rank"]) for r in ranked(job, scored, job.top_k)] == [("b", 1), ("d", 2)]
    assert [r["id"] for r in ranked(job, scored, None)] == ["b", "d", "a", "c"]


class _Client:
    def __init__(self):
        self.calls = []

    def info(self):
        return ModelInfo(
            id="m", revision="r", kind="seq-cls", device="cpu", dtype="float32", max_length=64, fallback=False
        )

    def score(self, request):
        self.calls.append(list(request.documents))
        scores = [len(d) / 10 for d in request.documents]
        return ChunkedScores(scores, [0] * len(scores)) if request.long_documents == "chunk" else scores


def test_processor_chunks_misses_and_flags_by_threshold_over_all_candidates():
    settings = Settings.model_validate({"worker": {"chunk_documents": 2}})
    client = _Client()
    proc = JobProcessor(settings, client, ScoringCore(None, settings.worker.chunk_documents), "w")
    job = RerankJob(
        job_id="j",
        feed="moderation",
        query="q",
        top_k=1,
        threshold=0.3,
        candidates=[Candidate(id=str(i), text="x" * i) for i in range(1, 6)],
    )
    item = proc.admit([job])[0]
    assert item.lookup.request.instruction == settings.kafka.feeds["moderation"].instruction
    res = proc.finish(item)
    assert [len(c) for c in client.calls] == [2, 2, 1]
    assert [r.id for r in res.ranked] == ["5"]
    assert res.flagged == ["5", "4", "3"]
    assert res.model.id == "m" and res.cached == 0
