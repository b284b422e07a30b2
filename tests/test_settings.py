"""Configuration: sources, precedence, validation messages, and docs that match the code."""

from __future__ import annotations

import pytest

from schemas import readme_table
from schemas.settings import ConfigError, Settings, env_var, load_settings


def test_defaults_validate():
    s = load_settings(environ={})
    assert s == Settings()
    assert s.kafka.input_topics == ["rerank.jobs.recommendation", "rerank.jobs.moderation"]


def test_env_overrides_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis:\n  ttl_s: 60\n  key_prefix: 'from-file:'\nserve:\n  max_replicas: 4\n")
    s = load_settings(
        environ={"RERANK_CONFIG": str(cfg), "RERANK_REDIS_TTL_S": "30", "KAFKA_BOOTSTRAP_SERVERS": "h1:9092,h2:9092"}
    )
    assert s.redis.ttl_s == 30  # env wins
    assert s.redis.key_prefix == "from-file:"  # file over default
    assert s.serve.max_replicas == 4
    assert s.kafka.client_options()["bootstrap_servers"] == ["h1:9092", "h2:9092"]


def test_list_and_json_values():
    s = load_settings(
        environ={
            "RERANK_MODEL_ALLOWED_MODELS": "a, b",
            "RERANK_KAFKA_FEEDS": '{"news": {"topic": "jobs.news", "instruction": "Rank news"}}',
        }
    )
    assert s.model.allowed_models == ["a", "b"]
    assert s.kafka.feed_for_topic("jobs.news") == "news"


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"RERANK_REDIS_TTL_S": "soon"}, "redis.ttl_s (RERANK_REDIS_TTL_S)"),
        ({"RERANK_SERVE_MIN_REPLICAS": "3", "RERANK_SERVE_MAX_REPLICAS": "2"}, "min_replicas"),
        ({"RERANK_KAFKA_FEEDS": "{not json"}, "RERANK_KAFKA_FEEDS: invalid JSON"),
    ],
)
def test_bad_values_name_the_setting(environ, needle):
    with pytest.raises(ConfigError) as err:
        load_settings(environ=environ)
    assert needle in str(err.value)


def test_unknown_key_in_file_is_an_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis:\n  ttl: 60\n")
    with pytest.raises(ConfigError, match="redis.ttl"):
        load_settings(environ={"RERANK_CONFIG": str(cfg)})


def test_env_names():
    assert env_var("kafka", "bootstrap_servers") == "KAFKA_BOOTSTRAP_SERVERS"
    assert env_var("redis", "url") == "REDIS_URL"
    assert env_var("model", "model") == "RERANK_MODEL"
    assert env_var("serve", "max_batch_size") == "RERANK_SERVE_MAX_BATCH_SIZE"


def test_readme_configuration_table_is_current():
    text = readme_table.README.read_text()
    assert readme_table.render(text) == text, "README config table is stale: run `python -m schemas.readme_table`"
