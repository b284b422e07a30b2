"""Session fixtures for the real local services (Kafka, Redis) the integration tests talk to.

They never start anything: `make test` (deploy/local/with-services.sh) does, or the configured
KAFKA_BOOTSTRAP_SERVERS / REDIS_URL point elsewhere. A service that is not reachable fails the
test with a message saying how to provide it — never a skip.
"""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from schemas.settings import load_settings

HOW_TO = (
    "run the suite with `make test` (starts local Kafka + Redis via deploy/local), "
    "or start them with `deploy/local/services.sh start`, or set {var}"
)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    bootstrap = load_settings().kafka.bootstrap_servers
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=5000)
        admin.describe_cluster()
        admin.close()
    except (KafkaError, OSError) as exc:
        pytest.fail(f"Kafka not reachable at {bootstrap} ({exc!r}): " + HOW_TO.format(var="KAFKA_BOOTSTRAP_SERVERS"))
    return bootstrap


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = load_settings().redis.url
    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        pytest.fail(f"Redis not reachable at {url} ({exc!r}): " + HOW_TO.format(var="REDIS_URL"))
    return url


_counter = itertools.count()
_run = uuid.uuid4().hex[:6]


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A prefix unique to this test (and run), for topic names, group ids and cache keys."""
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:40].strip("-")
    return f"t{_run}-{next(_counter)}-{base}"


@pytest.fixture
def kafka_admin(kafka_bootstrap: str):
    """An admin client that deletes every topic the test created with it."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap.split(","))
    created: list[str] = []
    original = admin.create_topics

    def create_topics(new_topics, *args, **kwargs):
        created.extend(t.name for t in new_topics)
        return original(new_topics, *args, **kwargs)

    admin.create_topics = create_topics  # type: ignore[method-assign]
    yield admin
    if created:
        try:
            admin.delete_topics(created)
        except Exception:  # noqa: BLE001 - cleanup must not mask the test's own result
            pass
    admin.close()


def pytest_configure(config: pytest.Config) -> None:
    # No hub downloads at run time; no Ray usage reporting from tests.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
