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
        n = settings.kafka.topic_partitions
        try:
            admin.create_topics([NewTopic(t, n, 1) for t in missing], raise_errors=False)
        except TopicAlreadyExistsError:
            pass  # another worker won the race
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not set(missing) <= set(admin.list_topics()):
            time.sleep(0.2)
        log.info("created topics %s (%d partitions)", missing, n)
        return missing
    finally:
        if own:
            admin.close()
