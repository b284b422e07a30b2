"""kafka-python 3.0.12 abandons a leader's join that finishes between two polls (workers/kafka_join_fix.py).

Deterministic reproduction against the real broker: a lone member owns a topic, a partition is added
(a metadata change: the leader must rejoin to assign it), and the member polls with a zero timeout so
that the join always finishes *between* polls. Unfixed, the member stays REBALANCING with its heartbeat
off and never owns the new partition.
"""

from __future__ import annotations

import time

from kafka.admin import NewPartitions, NewTopic

from schemas.settings import KafkaSettings, Settings
from workers.consumer import JobConsumer
from workers.kafka_io import make_consumer


def test_a_join_finishing_between_polls_completes(kafka_admin, kafka_bootstrap, unique_name):
    topic = f"{unique_name}.jobs"
    kafka_admin.create_topics([NewTopic(topic, 1, 1)])
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap))
    client = make_consumer(settings, group_id=f"{unique_name}.g", metadata_max_age_ms=500)
    consumer = JobConsumer(client)
    try:
        consumer.wait_for_metadata([topic])
        consumer.subscribe([topic], on_assigned=lambda _: None, on_revoked=lambda _: None)
        deadline = time.monotonic() + 30
        while consumer.assignment() != {(topic, 0)} or consumer.rebalancing():
            assert time.monotonic() < deadline, "the lone member never joined"
            client.poll(timeout_ms=100)
        kafka_admin.create_partitions({topic: NewPartitions(total_count=2)})
        deadline = time.monotonic() + 20
        while consumer.assignment() != {(topic, 0), (topic, 1)} or consumer.rebalancing():
            assert time.monotonic() < deadline, (
                f"join lost: owns {sorted(consumer.assignment())}, rebalancing={consumer.rebalancing()}"
            )
            client.poll(timeout_ms=0)  # the join task runs on kafka-python's IO thread meanwhile
            time.sleep(0.2)
    finally:
        consumer.close()
