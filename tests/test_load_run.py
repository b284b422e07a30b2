"""A real (small) load run: generated jobs through real Kafka -> worker -> Serve -> Redis -> Kafka,
measured from the output topics; nothing may be lost."""

from __future__ import annotations

import uuid
from dataclasses import replace

from load_tests.profiles import PROFILES
from load_tests.run import KEYS, run_profile
from tests.fixtures_serve import serve_settings
from workers.topics import isolated_settings


def test_small_load_run_loses_nothing_and_measures_everything(serve_stack, tiny_qwen_dir, redis_url, kafka_bootstrap):
    name = f"load{uuid.uuid4().hex[:6]}"
    base = serve_settings(
        tiny_qwen_dir,
        redis_url,
        name,
        f"/{name}",
        serve_stack.settings.serve.http_port,
        kafka={"bootstrap_servers": kafka_bootstrap},
    )
    settings = isolated_settings(base, "loadtest", name)
    profile = replace(PROFILES["smoke"], rate=20, max_jobs=40, duration_s=20, candidates=(3, 8), queries=5)
    record = run_profile(profile, settings, drain_s=90)
    s = record["summary"]
    assert s["lost"] == 0 and s["results"] == 40 and s["dlq"] == 0, s
    assert set(KEYS) <= s.keys()
    assert 0 < s["cache_hit_ratio"] < 1  # 5 popular queries repeat: later jobs hit the cache
    assert 0 < s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]
    assert record["samples"] and all(x["replicas"] == 1 for x in record["samples"])
    assert any(x["lag"] is not None for x in record["samples"])
    assert record["timeline"] and record["worker_cache"]["hits"] > 0
