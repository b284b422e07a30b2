"""The two kafka-python 3.0.12 bugs of workers/kafka_python_fixes.py, reproduced deterministically against
the real broker; both tests fail without the fixes.

- A lone member owns a topic, a partition is added (a metadata change: the leader must rejoin to assign
  it), and the member polls with a zero timeout so the join always finishes *between* polls. Unfixed, it
  stays REBALANCING with its heartbeat off and never owns the new partition.
- Records of partition A are half taken, A is paused (its leftovers are parked), partition B is consumed
  to the end, A is resumed. Unfixed, A is never fetched again: the "stalled for good" partition that
  per-feed back-pressure (which pauses only some partitions) used to cause.
"""

from __future__ import annotations

import time

from kafka import KafkaProducer, TopicPartition
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


def test_a_partition_paused_with_leftover_records_is_fetched_after_resume(kafka_admin, kafka_bootstrap, unique_name):
    topic = f"{unique_name}.jobs"
    kafka_admin.create_topics([NewTopic(topic, 2, 1)])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(50):
        for p in (0, 1):
            producer.send(topic, f"{p}-{i}".encode(), partition=p)
    producer.flush()
    producer.close()
    a, b = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer = make_consumer(Settings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap)), group_id=None)
    got: dict[int, list[bytes]] = {0: [], 1: []}

    def poll(max_records: int) -> None:
        for tp, recs in consumer.poll(timeout_ms=100, max_records=max_records).items():
            got[tp.partition] += [r.value for r in recs]

    try:
        consumer.assign([a, b])
        deadline = time.monotonic() + 20
        while not got[0]:  # A's fetched records are now partly taken, the rest held for the next poll
            assert time.monotonic() < deadline, "nothing fetched from partition 0"
            poll(1)
        consumer.pause(a)
        while len(got[1]) < 50:  # B to the end while A's leftovers stay parked
            assert time.monotonic() < deadline, f"partition 1 stopped at {len(got[1])} of 50"
            poll(5)
        consumer.resume(a)
        while len(got[0]) < 50:
            assert time.monotonic() < deadline, f"partition 0 stalled at {len(got[0])} of 50 after resume"
            poll(5)
        assert got[0] == [f"0-{i}".encode() for i in range(50)]  # in order, none skipped or repeated
    finally:
        consumer.close()
