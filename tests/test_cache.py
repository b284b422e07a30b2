"""Score cache against the real local Redis, plus failure behaviour against a dead port."""

from __future__ import annotations

import time

import pytest

from schemas.settings import RedisSettings
from serve_app.scoring.cache import CacheQuery, ScoreCache, cache_key, cache_keys, decode_score, encode_score
from tests.support.net import free_port

DOCS = ["ein Fahrrad", "a bicycle", "un vélo", ""]


@pytest.fixture
def cache(redis_url: str, unique_name: str) -> ScoreCache:
    c = ScoreCache(RedisSettings(url=redis_url, key_prefix=f"{unique_name}:", ttl_s=60))
    yield c
    import redis

    r = redis.Redis.from_url(redis_url)
    keys = list(r.scan_iter(match=f"{unique_name}:*"))
    if keys:
        r.delete(*keys)
    c.close()


def test_key_is_length_prefixed_so_concatenations_do_not_collide():
    a = cache_key("p:", "m", "k", "ins", "ab", "c")
    b = cache_key("p:", "m", "k", "ins", "a", "bc")
    c = cache_key("p:", "m", "k", "insa", "", "bc")
    assert len({a, b, c}) == 3
    assert a.startswith(b"p:") and a == cache_key("p:", "m", "k", "ins", "ab", "c")
    # every part matters
    assert cache_key("p:", "m2", "k", "ins", "ab", "c") != a
    assert cache_key("p:", "m", "k2", "ins", "ab", "c") != a


def test_keys_of_a_job_equal_the_single_keys_and_never_change():
    """cache_keys hashes a job's shared parts once: same bytes as cache_key, and the same keys as before that
    (golden values), so scores cached by an older worker are still found."""
    docs = ["doc", "", "ünïcode 🙂", "doc"]
    for mode in ("", "chunk:start:-"):
        assert cache_keys("p:", "fp", "seq-cls", "ins", "q", docs, mode) == [
            cache_key("p:", "fp", "seq-cls", "ins", "q", d, mode) for d in docs
        ]
    assert cache_key("p:", "fp", "seq-cls", "ins", "q", "doc").hex() == "703acb9e0391163e254dedf7220aa5f32933"
    chunked = cache_key("p:", "fp", "seq-cls", "ins", "q", "doc", "chunk:start:-")
    assert chunked.hex() == "703ad36316a888f4a2905602cc49841eb0b2"


def test_value_round_trip_is_exact():
    for v in (0.0, 1.0, 0.123456789012345, -3.5e-9):
        assert decode_score(encode_score(v)) == v
    assert decode_score(None) is None and decode_score(b"garbage") is None


def test_lookup_store_round_trip_and_stats(cache: ScoreCache):
    assert cache.lookup("fp", "seq-cls", "ins", "q", DOCS) == [None] * 4
    assert cache.stats == {"hits": 0, "misses": 4, "bypassed": 0}
    cache.store("fp", "seq-cls", "ins", "q", DOCS[:2], [0.25, 0.75])
    assert cache.lookup("fp", "seq-cls", "ins", "q", DOCS) == [0.25, 0.75, None, None]
    # other instruction / fingerprint -> misses
    assert cache.lookup("fp2", "seq-cls", "ins", "q", DOCS[:2]) == [None, None]
    assert cache.lookup("fp", "seq-cls", "other", "q", DOCS[:2]) == [None, None]
    assert cache.stats == {"hits": 2, "misses": 10, "bypassed": 0}


def test_lookup_many_splits_per_job(cache: ScoreCache):
    cache.store("fp", "k", "i", "q1", ["a", "b"], [0.1, 0.2])
    cache.store("fp", "k", "i", "q2", ["a"], [0.9])
    got = cache.lookup_many(
        [
            CacheQuery("fp", "k", "i", "q1", ["a", "x", "b"]),
            CacheQuery("fp", "k", "i", "q2", ["a"]),
            CacheQuery("fp", "k", "i", "q3", []),
        ]
    )
    assert got == [[0.1, None, 0.2], [0.9], []]


def test_ttl_is_set(cache: ScoreCache, redis_url: str):
    import redis

    cache.store("fp", "k", "i", "q", ["d"], [0.5])
    ttl = redis.Redis.from_url(redis_url).ttl(cache.key("fp", "k", "i", "q", "d"))
    assert 0 < ttl <= 60


def test_disabled_is_a_no_op():
    c = ScoreCache(RedisSettings(enabled=False))
    c.store("fp", "k", "i", "q", ["a"], [0.5])
    assert c.lookup("fp", "k", "i", "q", ["a"]) == [None]
    assert c.stats == {"hits": 0, "misses": 0, "bypassed": 0}


def test_redis_down_never_raises_counts_bypass_and_backs_off(caplog):
    c = ScoreCache(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2), log_interval_s=60)
    with caplog.at_level("WARNING", logger="serve_app.scoring.cache"):
        assert c.lookup("fp", "k", "i", "q", ["a", "b"]) == [None, None]
        c.store("fp", "k", "i", "q", ["a"], [0.5])
        t0 = time.monotonic()
        for _ in range(50):
            assert c.lookup("fp", "k", "i", "q", ["a"]) == [None]
        assert time.monotonic() - t0 < 0.5, "calls while down must skip Redis, not pay a timeout each"
    assert c.stats["bypassed"] == 2 + 1 + 50
    assert c.stats["hits"] == 0
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


def test_job_id_reuse_with_different_content_is_reported_redelivery_is_not(cache: ScoreCache):
    first = cache.remember_jobs([("job-1", "aaa"), ("job-2", "bbb")], ttl_s=60)
    assert first == [False, False]
    again = cache.remember_jobs([("job-1", "aaa"), ("job-2", "ccc"), ("job-\ud800", "x")], ttl_s=60)
    assert again == [False, True, False]  # identical redelivery: fine; same id, other content: reported


def test_job_id_reuse_is_counted_by_the_processor(cache: ScoreCache):
    from schemas.messages import Candidate, RerankJob
    from schemas.settings import Settings
    from serve_app.scoring import ScoringCore
    from tests.test_worker_loop import GatedClient
    from workers import metrics
    from workers.processing import JobProcessor

    proc = JobProcessor(Settings(), GatedClient(), ScoringCore(cache), "w")
    before = metrics.JOB_ID_REUSED.labels("recommendation")._value.get()
    a = RerankJob(job_id="same", feed="recommendation", query="q", candidates=[Candidate(id="a", text="x")])
    proc.admit([a, a.model_copy(update={"created_at": a.created_at + 5})])  # a resend: not a conflict
    assert metrics.JOB_ID_REUSED.labels("recommendation")._value.get() == before
    proc.admit([a.model_copy(update={"query": "other"})])
    assert metrics.JOB_ID_REUSED.labels("recommendation")._value.get() == before + 1
