"""Kafka consumer-group lag: the backlog signal of the autoscaling policy.

The only module of the Serve app that talks to Kafka. Lag of a partition = end offset -
committed offset (the beginning offset when the group never committed, matching the workers'
``auto_offset_reset=earliest``); the total is the sum over the input topics' partitions, as in
KEDA's Kafka scaler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from schemas.settings import KafkaSettings


@dataclass(frozen=True)
class LagReading:
    total: int
    partitions: dict[tuple[str, int], int] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    committed: dict[tuple[str, int], int | None] = field(default_factory=dict)  # None: never committed


class KafkaLagSource:
    """Reads a group's lag on some topics; clients are created on first use and reused."""

    def __init__(self, kafka: KafkaSettings, group_id: str, topics: list[str] | None = None, timeout_ms: int = 5000):
        self.kafka = kafka
        self.group_id = group_id
        self.topics = list(topics or kafka.input_topics)
        self._timeout_ms = timeout_ms
        self._admin: Any = None
        self._consumer: Any = None

    def _clients(self):
        from kafka import KafkaAdminClient, KafkaConsumer

        opts = self.kafka.client_options()
        if self._admin is None:
            self._admin = KafkaAdminClient(**opts, request_timeout_ms=self._timeout_ms)
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                **opts, group_id=None, enable_auto_commit=False, request_timeout_ms=max(self._timeout_ms, 5000) + 1000
            )
        return self._admin, self._consumer

    def read(self) -> LagReading:
        """One reading; raises on broker errors (the caller decides what a failed reading means)."""
        from kafka import TopicPartition

        admin, consumer = self._clients()
        tps = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not tps:
            return LagReading(0)
        committed = admin.list_group_offsets(self.group_id).get(self.group_id, {})
        end = consumer.end_offsets(tps)
        begin = consumer.beginning_offsets(tps)
        lags, positions = {}, {}
        for tp in tps:
            om = committed.get(tp)
            done = om.offset if om is not None and om.offset >= 0 else None
            lags[(tp.topic, tp.partition)] = max(0, end[tp] - (begin[tp] if done is None else done))
            positions[(tp.topic, tp.partition)] = done
        return LagReading(sum(lags.values()), lags, committed=positions)

    def close(self) -> None:
        for client in (self._admin, self._consumer):
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - closing a broken client must not raise
                    pass
        self._admin = self._consumer = None
