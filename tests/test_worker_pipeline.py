"""Worker end to end: real Kafka, real Redis, real Ray Serve (tiny model), worker subprocesses."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from schemas.messages import Candidate, ErrorKind, RerankJob, now_ms
from tests.fixtures_worker import make_jobs
from tests.support.net import free_port

pytestmark = pytest.mark.slow


def _same_ranking(a, b) -> bool:
    return (
        [(r.id, r.rank) for r in a.ranked] == [(r.id, r.rank) for r in b.ranked]
        and a.flagged == b.flagged
        and all(abs(x.score - y.score) < 1e-6 for x, y in zip(a.ranked, b.ranked))
    )


def test_both_feeds_match_direct_engine_then_replay_is_all_cached(make_pipeline, worker_serve):
    p = make_pipeline()
    w = p.start_worker()
    rec = make_jobs("rec", 6, docs=12, top_k=5)
    mod = make_jobs("mod", 4, docs=8, feed="moderation", threshold=0.5)
    p.produce(rec + mod)
    w.wait_ready()
    p.wait_for([j.job_id for j in rec + mod], timeout=90)

    engine = worker_serve.direct_engine()
    flagged_any = 0
    for job in rec + mod:
        (res,) = p.results[job.job_id]
        instr = p.settings.kafka.feeds[job.feed].instruction
        scores = engine.score(job.query, [c.text for c in job.candidates], instruction=instr)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        want = order[: job.top_k] if job.top_k else order
        assert [r.id for r in res.ranked] == [job.candidates[i].id for i in want]
        for r, i in zip(res.ranked, want):
            assert r.score == pytest.approx(scores[i], abs=1e-4)
        assert res.cached == 0 and res.timings.model_ms > 0
        if job.feed == "moderation":
            expect = [job.candidates[i].id for i in order if scores[i] >= job.threshold]
            assert res.flagged == expect
            flagged_any += bool(expect)
        else:
            assert res.flagged == []
    assert res.model.id and res.model.kind

    # Replay: same content, new job ids -> every score from the cache, zero model calls, same result.
    replay = [j.model_copy(update={"job_id": "re-" + j.job_id, "created_at": now_ms()}) for j in rec + mod]
    p.produce(replay)
    p.wait_for([j.job_id for j in replay], timeout=60)
    for job in replay:
        (again,) = p.results[job.job_id]
        (first,) = p.results[job.job_id[3:]]
        assert again.cached == len(job.candidates) and again.timings.model_ms == 0
        assert _same_ranking(again, first)


def test_each_bad_input_kind_is_dead_lettered_and_later_jobs_still_run(make_pipeline):
    p = make_pipeline(RERANK_LIMITS_MAX_DOCUMENTS="5")
    rec_topic = p.settings.kafka.feeds["recommendation"].topic
    good = lambda i, **kw: RerankJob(  # noqa: E731
        job_id=f"bad-{i}",
        feed="recommendation",
        query="q",
        candidates=[Candidate(id="a", text="x"), Candidate(id="b", text="y")],
        **kw,
    )
    bad = {
        ErrorKind.undecodable: b"\xff\xfe\xfa",
        ErrorKind.invalid_json: b'{"job_id": "oops"',
        ErrorKind.schema_violation: json.dumps({"job_id": "sv", "feed": "recommendation"}).encode(),
        ErrorKind.duplicate_ids: json.dumps(
            {
                "job_id": "dup",
                "feed": "recommendation",
                "query": "q",
                "candidates": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}],
            }
        ).encode(),
        ErrorKind.too_large: make_jobs("big", 1, docs=6)[0].model_dump_json().encode(),
        ErrorKind.unknown_feed: good(0).model_copy(update={"feed": "nope"}).model_dump_json().encode(),
        ErrorKind.unknown_model: good(1, model="someone/else").model_dump_json().encode(),
        ErrorKind.deadline_expired: good(2, created_at=now_ms() - 60_000, deadline_ms=1000).model_dump_json().encode(),
    }
    w = p.start_worker()
    for payload in bad.values():
        p.send_raw(rec_topic, payload)
    later = [good(i) for i in range(10, 14)]
    p.produce(later)
    w.wait_ready()
    p.wait_for([j.job_id for j in later], timeout=60, dlq=len(bad))
    kinds = {d.error_kind: d for d in p.dead_letters}
    assert set(kinds) == set(bad), kinds.keys()
    for kind, payload in bad.items():
        d = kinds[kind]
        assert d.payload() == payload and d.reason and d.source_topic == rec_topic
    assert kinds[ErrorKind.unknown_model].job_id == "bad-1"
    time.sleep(1)
    p.poll()
    assert len(p.dead_letters) == len(bad)  # one each, no crash loop
    assert w.proc.poll() is None


def test_sigkill_mid_stream_then_restart_every_job_has_a_result(make_pipeline):
    p = make_pipeline()
    jobs = make_jobs("k", 150, docs=16)
    p.produce(jobs)
    w1 = p.start_worker()
    w1.wait_ready()
    p.wait_count(10, timeout=60)
    w1.kill()  # SIGKILL: no shutdown code runs
    assert len(p.results) < len(jobs), "worker finished everything before the kill; make the stream longer"
    w2 = p.start_worker()
    p.wait_for([j.job_id for j in jobs], timeout=120)
    for job_id, results in p.results.items():
        for dup in results[1:]:
            assert _same_ranking(dup, results[0]), job_id
    assert w2.proc.poll() is None


def test_sigterm_finishes_in_flight_and_commits_exactly_what_was_published(make_pipeline):
    p = make_pipeline(RERANK_WORKER_MAX_IN_FLIGHT="4", RERANK_WORKER_POLL_MAX_RECORDS="8")
    jobs = make_jobs("t", 120, docs=24)
    where = p.produce(jobs)
    w = p.start_worker()
    w.wait_ready()
    p.wait_count(5, timeout=60)
    w.signal(signal.SIGTERM)
    assert w.wait(60) == 0, w.output[-3000:]
    time.sleep(0.5)
    p.poll(1)
    committed = p.committed()
    below = {j for j, (t, part, off) in where.items() if off < committed.get((t, part), 0)}
    assert below, "nothing committed:\n" + w.output[-3000:]
    assert set(p.results) == below  # everything started was finished, published and committed; nothing more
    assert len(below) < len(jobs)
    assert all(len(r) == 1 for r in p.results.values())


def _partitions(logged: str) -> set[tuple[str, int]]:
    """Partitions of one 'assigned [...]' log line: [('topic', 0), ...]."""
    return {(t, int(p)) for t, p in re.findall(r"\('([^']+)', (\d+)\)", logged)}


def _owned(output: str) -> set[tuple[str, int]]:
    """What a worker owns now, replaying its 'assigned [...]' / 'revoked [...]' lines in order (the
    cooperative assignor reports only the partitions that move, not the whole assignment)."""
    owned: set[tuple[str, int]] = set()
    for what, listed in re.findall(r" (assigned|revoked) \[(.*)\]", output):
        owned = owned | _partitions(listed) if what == "assigned" else owned - _partitions(listed)
    return owned


def test_two_workers_in_one_group_split_partitions(make_pipeline):
    p = make_pipeline()
    a, b = p.start_worker(), p.start_worker()
    a.wait_ready(), b.wait_ready()
    a.wait_assigned(), b.wait_assigned()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the rebalance settles with both members owning partitions
        owned_a, owned_b = _owned(a.output), _owned(b.output)
        if owned_a and owned_b and owned_a.isdisjoint(owned_b):
            break
        time.sleep(0.2)
    assert owned_a and owned_b and owned_a.isdisjoint(owned_b), a.output + b.output
    jobs = make_jobs("two", 40, docs=8) + make_jobs("two-m", 40, docs=8, feed="moderation")
    p.produce(jobs)
    p.wait_for([j.job_id for j in jobs], timeout=90)
    by_worker = {r[0].worker_id for r in p.results.values()}
    assert len(by_worker) == 2
    assert all(len(r) == 1 for r in p.results.values())  # stable group: no reprocessing


def test_redis_stopped_mid_run_results_still_produced_and_bypass_counted(make_pipeline):
    port, metrics_port = free_port(), free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        p = make_pipeline(
            redis=f"redis://127.0.0.1:{port}/0",
            RERANK_WORKER_METRICS_PORT=str(metrics_port),
            RERANK_REDIS_TIMEOUT_S="0.2",
        )
        w = p.start_worker()
        first = make_jobs("r1", 5, docs=6)
        p.produce(first)
        w.wait_ready()
        p.wait_for([j.job_id for j in first], timeout=60)
        redis_proc.terminate()
        redis_proc.wait(10)
        second = [j.model_copy(update={"job_id": "r2" + j.job_id}) for j in first] + make_jobs("r3", 5, docs=6)
        p.produce(second)
        p.wait_for([j.job_id for j in second], timeout=60)
        for j in second:
            assert p.results[j.job_id][0].cached == 0  # cache gone, model used instead
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        bypassed = float(
            next(line.split()[1] for line in text.splitlines() if line.startswith("rerank_worker_cache_bypassed "))
        )
        assert bypassed >= 60
        assert w.proc.poll() is None
    finally:
        if redis_proc.poll() is None:
            redis_proc.kill()


def test_exactly_once_mode_survives_sigkill_without_duplicates(make_pipeline):
    p = make_pipeline(
        RERANK_KAFKA_EXACTLY_ONCE="true", RERANK_WORKER_WORKER_ID="eos-1", RERANK_WORKER_POLL_MAX_RECORDS="8"
    )
    jobs = make_jobs("x", 150, docs=16)
    p.produce(jobs)
    w1 = p.start_worker()
    w1.wait_ready()
    p.wait_count(10, timeout=60)
    w1.kill()
    assert len(p.results) < len(jobs)
    p.start_worker()
    p.wait_for([j.job_id for j in jobs], timeout=120)
    time.sleep(1)
    p.poll(1)
    dupes = {k: len(v) for k, v in p.results.items() if len(v) > 1}
    assert not dupes, dupes  # read_committed sees each result once


def test_ray_actor_mode_runs_the_same_worker_in_n_actors(make_pipeline):
    p = make_pipeline()
    p.worker_args = ["--ray", "--replicas", "2"]
    w = p.start_worker()
    w.wait_ready(90)
    jobs = make_jobs("ray", 30, docs=6) + make_jobs("ray-m", 30, docs=6, feed="moderation")
    p.produce(jobs)
    p.wait_for([j.job_id for j in jobs], timeout=90)
    assert len({r[0].worker_id for r in p.results.values()}) == 2
    w.signal(signal.SIGTERM)
    assert w.wait(60) == 0, w.output[-3000:]


def test_scoring_failures_are_retried_then_dead_lettered(make_pipeline):
    # A Serve call timeout far below any real latency makes every scoring attempt fail.
    p = make_pipeline(RERANK_WORKER_SCORING_TIMEOUT_S="0.001", RERANK_WORKER_SCORING_RETRIES="2")
    jobs = make_jobs("fail", 3, docs=4)
    p.produce(jobs)
    w = p.start_worker()
    w.wait_ready()
    deadline = time.monotonic() + 60
    while len(p.dead_letters) < 3 and time.monotonic() < deadline:
        p.poll()
    assert sorted(d.job_id for d in p.dead_letters) == sorted(j.job_id for j in jobs)
    for d in p.dead_letters:
        assert d.error_kind == ErrorKind.scoring_failed and "after 3 attempts" in d.reason
    assert not p.results and w.proc.poll() is None
    time.sleep(0.5)
    assert sum(p.committed().values()) == 3  # dead-lettered offsets are committed
