"""Pure logic of the worker: offset tracking, decoding/validation, ranking (no services)."""

from __future__ import annotations

import json

import pytest

from schemas.messages import Candidate, ErrorKind, ModelRef, RerankJob, now_ms
from schemas.settings import LimitsSettings, Settings
from workers.decode import Rejection, decode_job
from workers.offsets import OffsetTracker
from workers.processor import JobProcessor, rank

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


def test_rank_orders_best_first_ties_in_input_order_and_top_k():
    job = RerankJob(job_id="j", feed="moderation", query="q", top_k=2, threshold=0.5,
                    candidates=[Candidate(id=c, text=c) for c in "abcd"])
    ranked = rank(job, [0.2, 0.9, 0.2, 0.6])
    assert [(r.id, r.rank) for r in ranked] == [("b", 1), ("d", 2)]
    assert [r.id for r in rank(job, [0.2, 0.9, 0.2, 0.6], top_k=None)] == ["b", "d", "a", "c"]


class _Scorer:
    model = ModelRef(id="m", revision="r", kind="seq-cls")
    fingerprint = "m@r"

    def __init__(self):
        self.calls = []

    def score(self, query, documents, instruction):
        self.calls.append(list(documents))
        return [len(d) / 10 for d in documents]


def test_processor_chunks_misses_and_flags_by_threshold_over_all_candidates():
    settings = Settings.model_validate({"worker": {"chunk_documents": 2}})
    scorer = _Scorer()
    proc = JobProcessor(settings, scorer, None, "w")
    job = RerankJob(job_id="j", feed="moderation", query="q", top_k=1, threshold=0.3,
                    candidates=[Candidate(id=str(i), text="x" * i) for i in range(1, 6)])
    prep = proc.prepare([job])[0]
    assert prep.instruction == settings.kafka.feeds["moderation"].instruction
    proc.score_misses(prep)
    assert [len(c) for c in scorer.calls] == [2, 2, 1]
    res = proc.result(prep, from_cache=0, model_ms=1.0)
    assert [r.id for r in res.ranked] == ["5"]
    assert res.flagged == ["5", "4", "3"]
