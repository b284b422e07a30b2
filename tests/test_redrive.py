"""Dead-letter redrive (``rerank-stream dlq``): selection and loop rules, header parsing, and one
real-broker round trip: a job dead-lettered for a limit comes back as a result once the limit is
raised, and a replay that fails again is never replayed in a loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import REDRIVE_COUNT_HEADER, REDRIVE_FROM_HEADER, DeadLetter, ErrorKind
from schemas.settings import Settings
from tests.fixtures_worker import ROOT, make_jobs
from workers.dead_letters import build_dead_letter
from workers.decode import Rejection
from workers.headers import redrive_mark
from workers.redrive import DlqEntry, Filters, parse_entry, parse_time, plan, replay_headers

NOW = 1_800_000_000_000


def _entry(offset: int, *, truncated: bool = False, count: int = 0, source: str | None = None, **kw) -> DlqEntry:
    raw = build_dead_letter(
        b"x" * (5000 if truncated else 10),
        Rejection(kw.pop("kind", ErrorKind.too_large), "why", kw.pop("job_id", f"j{offset}")),
        source_topic=kw.pop("source_topic", "jobs.rec"),
        source_partition=0,
        source_offset=offset,
        worker_id="w",
        max_bytes=1024 if truncated else 900_000,
        produced_at=kw.pop("produced_at", NOW),
        redrive_count=count,
        redrive_from=source,
    )
    return parse_entry("dlq", 0, offset, raw, kw.pop("headers", ()))


def test_parse_time_forms():
    assert parse_time("1700000000000") == 1_700_000_000_000
    assert parse_time("30m", now=NOW) == NOW - 30 * 60_000
    assert parse_time("2h", now=NOW) == NOW - 7_200_000
    assert parse_time("2026-11-22T10:00:00") == parse_time("2026-11-22T10:00:00+00:00")
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


def test_plan_skips_truncated_superseded_and_failed_replays_unless_forced():
    first = _entry(0)
    again = _entry(1, count=1, source=first.coordinates)  # the replay of `first` failed again
    cut = _entry(2, truncated=True)
    fresh = _entry(3)
    entries = [first, again, cut, fresh]
    assert cut.letter is not None and cut.letter.payload_truncated
    got = {d.entry.offset: d for d in plan(entries, entries, force=False, to_topic=None)}
    assert [o for o, d in got.items() if d.replay] == [3] and got[3].why == "jobs.rec"
    assert "truncated" in got[2].why and "superseded" in got[0].why and "--force" in got[1].why
    forced = {d.entry.offset: d for d in plan(entries, entries, force=True, to_topic="other")}
    assert [o for o, d in forced.items() if d.replay] == [1, 3] and forced[1].why == "other"
    assert not forced[0].replay and not forced[2].replay  # never: superseded, truncated


def test_filters_by_kind_feed_job_and_time():
    s = Settings.model_validate({"kafka": {"feeds": {"rec": {"topic": "jobs.rec", "instruction": "i"}}}})
    a = _entry(0, kind=ErrorKind.unknown_model, job_id="a", produced_at=NOW - 10)
    b = _entry(1, kind=ErrorKind.too_large, job_id="b", source_topic="elsewhere", produced_at=NOW)
    unreadable = parse_entry("dlq", 0, 2, b"not json", ())
    assert unreadable.letter is None and "not a dead letter" in unreadable.problem

    def pick(**kw) -> list[int]:
        return [e.offset for e in (a, b, unreadable) if Filters(**kw).matches(e, s)]

    assert pick() == [0, 1, 2]
    assert pick(kinds={"unknown_model"}) == [0]
    assert pick(feeds={"rec"}) == [0]
    assert pick(job_ids={"b"}) == [1]
    assert pick(since_ms=NOW) == [1] and pick(until_ms=NOW) == [0]
    assert pick(refs={"0:2"}) == [2]


def test_replay_headers_keep_user_headers_drop_ours_and_count_up():
    e = _entry(7, count=2, headers=[("traceparent", b"00-abc"), ("rerank-internal", b"x"), ("user", None)])
    hdrs = replay_headers(e)
    assert ("traceparent", b"00-abc") in hdrs and ("user", b"") in hdrs
    assert not any(k == "rerank-internal" for k, _ in hdrs)
    assert dict(hdrs)[REDRIVE_COUNT_HEADER] == b"3" and dict(hdrs)[REDRIVE_FROM_HEADER] == b"dlq/0/7"


HEADER_VALUES = st.one_of(
    st.none(), st.binary(max_size=40), st.sampled_from([b"3", b"0", b"-1", b"\xff", "٣".encode()])
)
HEADER_KEYS = st.one_of(
    st.sampled_from([REDRIVE_COUNT_HEADER, REDRIVE_FROM_HEADER, "traceparent"]), st.text(max_size=20)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(HEADER_KEYS, HEADER_VALUES), max_size=6))
def test_redrive_mark_never_raises_and_a_marked_record_counts_as_replayed(headers):
    mark = redrive_mark(headers)
    marked = any(k in (REDRIVE_COUNT_HEADER, REDRIVE_FROM_HEADER) for k, _ in headers)
    assert (mark.count >= 1) == marked
    # and the mark always fits a dead letter
    raw = build_dead_letter(b"{}", Rejection(ErrorKind.internal_error, "r"), source_topic="t", source_partition=0,
                            source_offset=0, worker_id="w", max_bytes=1024, redrive_count=mark.count,
                            redrive_from=mark.source)  # fmt: skip
    letter = DeadLetter.model_validate_json(raw)
    assert len(raw) <= 1024 and letter.redrive_count == mark.count


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(st.tuples(st.text(max_size=10), HEADER_VALUES), max_size=3))
def test_any_dlq_record_parses_to_an_entry(value, headers):
    entry = parse_entry("dlq", 1, 5, value, headers)
    assert entry.letter is not None or entry.problem


# -- on the real broker --------------------------------------------------------------------------


def _dlq(p, monkeypatch, capsys, *args: str) -> str:
    """``rerank-stream dlq ...`` in this process with the pipeline's environment; its stdout."""
    from workers.cli import main

    for k, v in p.env.items():
        if k.startswith(("RERANK_", "KAFKA_", "REDIS_")):
            monkeypatch.setenv(k, v)
    capsys.readouterr()
    rc = main(["dlq", *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


def _end_offsets(p, topic: str) -> int:
    from kafka import TopicPartition

    from workers.kafka_io import make_consumer

    c = make_consumer(p.settings, group_id=None)
    try:
        tps = [TopicPartition(topic, i) for i in range(2)]
        return sum(c.end_offsets(tps).values())
    finally:
        c.close()


def _wait_dlq(p, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(p.dead_letters) < n and time.monotonic() < deadline:
        p.poll()
    assert len(p.dead_letters) >= n, f"{len(p.dead_letters)} dead letters, want {n}\n" + "".join(
        w.output[-3000:] for w in p.workers
    )


@pytest.mark.slow
def test_replay_after_the_fix_brings_the_job_back_and_a_failing_replay_never_loops(make_pipeline, monkeypatch, capsys):
    p = make_pipeline(RERANK_LIMITS_MAX_DOCUMENTS="5")
    rec_topic = p.settings.kafka.feeds["recommendation"].topic
    (big,) = make_jobs("redrive-big", 1, docs=8)
    w1 = p.start_worker()
    p.produce([big])
    w1.wait_ready()
    _wait_dlq(p, 1)
    assert p.dead_letters[0].error_kind == ErrorKind.too_large and p.dead_letters[0].redrive_count == 0
    # a dead letter whose payload was cut to fit: listed, never replayed
    cut = build_dead_letter(b"y" * 4000, Rejection(ErrorKind.too_large, "huge", "redrive-cut"), source_topic=rec_topic,
                            source_partition=0, source_offset=0, worker_id="w", max_bytes=1024)  # fmt: skip
    p.send_raw(p.settings.kafka.dlq_topic, cut, "redrive-cut").get(timeout=30)

    listed = [json.loads(line) for line in _dlq(p, monkeypatch, capsys, "list", "--json").splitlines()]
    assert {d["job_id"]: d["payload_truncated"] for d in listed} == {big.job_id: False, "redrive-cut": True}
    assert [d["job_id"] for d in map(json.loads, _dlq(p, monkeypatch, capsys, "list", "--json", "--feed",
                                                          "moderation").splitlines())] == []  # fmt: skip
    shown = json.loads(_dlq(p, monkeypatch, capsys, "show", big.job_id))
    assert shown["payload"]["job_id"] == big.job_id and shown["error_kind"] == "too_large"

    before = _end_offsets(p, rec_topic)
    dry = _dlq(p, monkeypatch, capsys, "replay")
    assert "dry run: would replay 1 of 2" in dry and "payload truncated" in dry
    assert _end_offsets(p, rec_topic) == before  # nothing sent

    # Replay before the fix: fails again, dead-lettered with the mark ...
    assert "replayed 1 of 2" in _dlq(p, monkeypatch, capsys, "replay", "--yes")
    _wait_dlq(p, 3)
    again = [d for d in p.dead_letters if d.redrive_count]
    assert (
        len(again) == 1
        and again[0].job_id == big.job_id
        and again[0].redrive_from.startswith(f"{p.settings.kafka.dlq_topic}/")
    )
    # ... and not replayed again: the first is superseded, the second a failed replay
    out = _dlq(p, monkeypatch, capsys, "replay", "--yes")
    assert "replayed 0 of 3" in out and "superseded" in out and "--force" in out
    time.sleep(1.5)
    p.poll(0.5)
    assert len(p.dead_letters) == 3 and not p.results

    # The fix: a worker with a higher limit; a forced replay of the job brings it back as a result.
    w1.signal(15)
    assert w1.wait(60) == 0
    w2 = p.start_worker(RERANK_LIMITS_MAX_DOCUMENTS="64")
    w2.wait_ready()
    out = _dlq(p, monkeypatch, capsys, "replay", "--yes", "--force", "--job-id", big.job_id)
    assert "replayed 1 of 2" in out, out
    p.wait_for([big.job_id], timeout=60)
    assert [r.ranked[0].rank for r in p.results[big.job_id]] == [1] and len(p.results[big.job_id][0].ranked) == 8
    time.sleep(1)
    p.poll(0.5)
    assert len(p.dead_letters) == 3 and len(p.results[big.job_id]) == 1


def test_dlq_command_names_a_missing_topic(kafka_bootstrap):
    env = {**os.environ, "RERANK_KAFKA_DLQ_TOPIC": "no-such-dlq-topic-for-redrive"}
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", "dlq", "list", "--timeout", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        proc.returncode == 2
        and "no-such-dlq-topic-for-redrive" in proc.stderr
        and "RERANK_KAFKA_DLQ_TOPIC" in proc.stderr
    )
