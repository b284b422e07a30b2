"""Topic checks at worker start-up against the real broker."""

from __future__ import annotations

import pytest

from schemas.settings import FeedSettings, KafkaSettings, Settings
from workers.topics import MissingTopicsError, ensure_topics, required_topics


def _settings(name: str, bootstrap: str, auto: bool) -> Settings:
    feeds = {"recommendation": FeedSettings(topic=f"{name}.rec", instruction="i")}
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            feeds=feeds,
            results_topic=f"{name}.res",
            dlq_topic=f"{name}.dlq",
            auto_create_topics=auto,
            topic_partitions=2,
        )
    )


def test_missing_topics_are_one_clear_error_listing_all(kafka_bootstrap, unique_name):
    s = _settings(unique_name, kafka_bootstrap, auto=False)
    with pytest.raises(MissingTopicsError) as err:
        ensure_topics(s)
    for topic in required_topics(s):
        assert topic in str(err.value)
    assert "RERANK_KAFKA_AUTO_CREATE_TOPICS" in str(err.value)


def test_auto_create_in_local_mode(kafka_admin, unique_name):
    s = _settings(unique_name, ",".join(kafka_admin.config["bootstrap_servers"]), auto=True)
    try:
        assert ensure_topics(s, kafka_admin) == required_topics(s)
        assert ensure_topics(s, kafka_admin) == []  # idempotent
        described = {t["name"]: len(t["partitions"]) for t in kafka_admin.describe_topics(required_topics(s))}
        assert described == {t: 2 for t in required_topics(s)}
    finally:
        kafka_admin.delete_topics(required_topics(s))
