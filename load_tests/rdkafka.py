"""The load generator's own Kafka clients, on librdkafka (confluent-kafka, a dev dependency).

On a small machine the load generator and the collector share the cores with the worker under test;
on kafka-python (pure-Python producing and record parsing) they cost it CPU. Same worker, bench_pipeline
replay median ~1,860 jobs/s before and 2,010-2,050 after (together with timing each replay to its last
result's arrival, changed at the same time). The producers in front of this system are mostly librdkafka
or Java anyway. The worker itself stays on kafka-python (the design card); only the measuring side changes.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from schemas.settings import Settings


class Message(NamedTuple):
    """A consumed record as the collector reads it (the fields it uses of kafka-python's records)."""

    topic: str
    partition: int
    offset: int
    value: bytes


def config(settings: Settings) -> dict[str, Any]:
    """librdkafka connection settings from the same ``kafka.*`` settings the workers use."""
    k = settings.kafka
    conf: dict[str, Any] = {"bootstrap.servers": k.bootstrap_servers, "security.protocol": k.security_protocol}
    if k.sasl_mechanism:
        conf.update(
            {
                "sasl.mechanisms": k.sasl_mechanism,
                "sasl.username": k.sasl_username or "",
                "sasl.password": k.sasl_password or "",
            }
        )
    if k.ssl_cafile:
        conf["ssl.ca.location"] = k.ssl_cafile
    return conf


class Producer:
    """``send`` / ``flush`` / ``close`` over a librdkafka producer (idempotent, acks=all, linger 2 ms)."""

    def __init__(self, settings: Settings):
        from confluent_kafka import Producer as RdProducer

        self._producer = RdProducer({**config(settings), "enable.idempotence": True, "linger.ms": 2})

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key=key)
                break
            except BufferError:  # local queue full: let librdkafka deliver some first
                self._producer.poll(0.01)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> None:
        left = self._producer.flush(timeout_s)
        if left:
            raise RuntimeError(f"{left} records not delivered within {timeout_s:.0f} s")

    def close(self) -> None:
        self.flush()


def read_from_start(settings: Settings, topics: list[str], timeout_s: float = 30.0) -> Any:
    """A consumer assigned every partition of ``topics`` from the beginning (read_committed, no group commits)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            **config(settings),
            "group.id": f"load-collector-{time.time_ns()}",  # never committed: assignment is manual
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 50,
        }
    )
    deadline = time.monotonic() + timeout_s
    while True:
        found = consumer.list_topics(timeout=5).topics
        if all(t in found and found[t].partitions for t in topics):
            break
        if time.monotonic() > deadline:
            consumer.close()
            raise RuntimeError(f"topics {topics} not found within {timeout_s:.0f} s")
        time.sleep(0.1)
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in sorted(found[t].partitions)])
    return consumer


def poll_batch(consumer: Any, timeout_s: float, max_records: int = 2000) -> list[Message]:
    """Records available now: waits for the first one only (its arrival time is the batch's), then drains."""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    msgs = [first, *consumer.consume(max_records - 1, 0)]
    return [Message(m.topic(), m.partition(), m.offset(), m.value()) for m in msgs if m.error() is None]
