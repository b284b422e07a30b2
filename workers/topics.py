"""Make sure the worker's topics exist before it consumes.

Local/test mode (kafka.auto_create_topics) creates missing topics; in production a missing
topic is a configuration mistake, so start-up fails with one error that lists all of them.
"""

from __future__ import annotations

import logging
import time

from schemas.settings import Settings

log = logging.getLogger(__name__)


class MissingTopicsError(RuntimeError):
    pass


def required_topics(settings: Settings) -> list[str]:
    k = settings.kafka
    return sorted({*k.input_topics, k.results_topic, k.dlq_topic})


def ensure_topics(settings: Settings, admin=None) -> list[str]:
    """Returns the topics created. Raises MissingTopicsError when some are missing and auto-create is off."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from workers.kafka_io import make_admin

    own = admin is None
    admin = admin or make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in required_topics(settings) if t not in existing]
        if not missing:
            return []
        if not settings.kafka.auto_create_topics:
            raise MissingTopicsError(
                f"missing Kafka topics: {', '.join(missing)} (create them, or set "
                "RERANK_KAFKA_AUTO_CREATE_TOPICS=true in local/test mode)"
            )
        k = settings.kafka
        n = k.topic_partitions
        configs = {} if k.min_insync_replicas is None else {"min.insync.replicas": str(k.min_insync_replicas)}
        try:
            admin.create_topics(
                [NewTopic(t, n, k.replication_factor, topic_configs=configs) for t in missing], raise_errors=False
            )
        except TopicAlreadyExistsError:
            pass  # another worker won the race
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not set(missing) <= set(admin.list_topics()):
            time.sleep(0.2)
        log.info("created topics %s (%d partitions, %d replicas)", missing, n, k.replication_factor)
        return missing
    finally:
        if own:
            admin.close()


def isolated_settings(base: Settings, prefix: str, run_id: str, partitions: int = 2) -> Settings:
    """``base`` with run-unique topics, group and cache prefix (demo, load tests): a run never
    sees an earlier run's data. Topics are auto-created; remove them with ``delete_isolated``."""
    kafka = base.kafka.model_copy(
        update={
            "feeds": {
                name: feed.model_copy(update={"topic": f"{prefix}.{run_id}.jobs.{name}"})  # keeps priority, model, ...
                for name, feed in base.kafka.feeds.items()
            },
            "results_topic": f"{prefix}.{run_id}.results",
            "dlq_topic": f"{prefix}.{run_id}.dlq",
            "group_id": f"{prefix}-{run_id}",
            "auto_create_topics": True,
            "topic_partitions": partitions,
        }
    )
    redis = base.redis.model_copy(update={"key_prefix": f"{base.redis.key_prefix}{prefix}:{run_id}:"})
    return base.model_copy(update={"kafka": kafka, "redis": redis})


def delete_isolated(settings: Settings) -> None:
    """Delete an isolated run's topics and cache keys; best effort (keys expire anyway)."""
    from workers.kafka_io import make_admin

    try:
        admin = make_admin(settings)
        admin.delete_topics(required_topics(settings), raise_errors=False)
        admin.close()
    except Exception as exc:  # noqa: BLE001
        log.warning("could not delete topics of %s: %r", settings.kafka.group_id, exc)
    try:
        import redis

        r = redis.Redis.from_url(settings.redis.url, socket_timeout=2)
        keys = list(r.scan_iter(match=settings.redis.key_prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            r.delete(*keys[start : start + 1000])
    except Exception:  # noqa: BLE001 - the cache may be down
        pass
