"""Pure logic of the load tests: Zipf popularity, corpus scripts, percentiles, lost accounting,
report files and the last-line JSON contract."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from load_tests import corpus
from load_tests.collector import Outcome
from load_tests.generator import JobGenerator, ZipfSampler
from load_tests.profiles import PROFILES
from load_tests.report import percentile, summarize, timeline, write_run


def test_zipf_sampler_prefers_popular_ranks():
    pick = ZipfSampler(100, 1.1, random.Random(0))
    counts = Counter(pick() for _ in range(20_000))
    assert set(counts) <= set(range(100))
    assert counts[0] > counts[1] > counts[9] > counts[50]
    assert 0.15 < counts[0] / 20_000 < 0.25  # 1 / H(100, 1.1) ~ 0.2


def test_corpus_is_multilingual_and_deterministic():
    rng = random.Random(1)
    texts = [corpus.document(rng) for _ in range(300)]
    scripts = set().union(*(corpus.scripts_of(t) for t in texts))
    assert {"latin", "cjk", "arabic", "cyrillic", "hangul", "devanagari", "emoji"} <= scripts
    assert texts == [corpus.document(r) for r in [random.Random(1)] for _ in range(300)]


def test_generator_repeats_popular_queries_with_the_same_candidates():
    gen = JobGenerator(PROFILES["smoke"], seed=3)
    jobs = [gen.next_job() for _ in range(200)]
    assert len({j.job_id for j in jobs}) == 200
    by_query = Counter(j.query for j in jobs)
    popular = by_query.most_common(1)[0][0]
    same = [j for j in jobs if j.query == popular]
    assert len(same) > 5 and all(j.candidates == same[0].candidates for j in same)
    assert {j.feed for j in jobs} == {"recommendation", "moderation"}
    lo, hi = PROFILES["smoke"].candidates
    assert all(lo <= len(j.candidates) <= hi for j in jobs)


def test_percentile_nearest_rank():
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([7], 99) == 7
    assert percentile([], 50) != percentile([], 50)  # NaN


def test_summary_counts_lost_dlq_and_cache():
    produced = {"a": (1000, 10), "b": (1000, 10), "c": (1000, 5), "d": (2000, 5)}
    outcomes = {
        "a": Outcome(1100, cached=10),
        "b": Outcome(1300, cached=0),
        "c": Outcome(1200, dead_letter="too_large"),
        "zzz": Outcome(1500, cached=1),  # not ours: ignored
    }
    s = summarize(produced, outcomes, started_ms=1000, duplicates=2)
    assert s["results"] == 2 and s["dlq"] == 1 and s["lost"] == 1 and s["duplicates"] == 2
    assert s["cache_hit_ratio"] == 0.5 and s["p50_ms"] == 100 and s["p99_ms"] == 300
    assert s["jobs_per_s"] == pytest.approx(2 / 0.3, rel=0.01)
    rows = timeline(produced, outcomes, started_ms=1000, window_s=1)
    assert rows[0]["jobs_per_s"] == 2


def test_write_run_writes_json_plots_and_markdown(tmp_path):
    produced = {f"j{i}": (1000 + i * 100, 10) for i in range(30)}
    outcomes = {j: Outcome(c + 50 + i, cached=i % 2) for i, (j, (c, _)) in enumerate(produced.items())}
    record = {
        "profile": "smoke",
        "profile_config": {},
        "started_ms": 1000,
        "date": "today",
        "machine": "m",
        "summary": summarize(produced, outcomes, 1000),
        "timeline": timeline(produced, outcomes, 1000, 1),
        "samples": [{"t": 1.0 + i, "replicas": 1 + (i > 2), "lag": 5 - i} for i in range(5)],
    }
    path = write_run("smoke", record, out_dir=tmp_path)
    assert json.loads(path.read_text())["summary"]["lost"] == 0
    names = sorted(p.name.removeprefix(path.stem) for p in tmp_path.iterdir())
    assert names == ["-latency.png", "-replicas-lag.png", "-throughput.png", ".json", ".md"]
    assert "| lost | 0 |" in path.with_suffix(".md").read_text()
