"""Samples the Serve replica count and the workers' Kafka consumer lag once per interval."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from schemas.settings import Settings


@dataclass
class Sampler:
    settings: Settings
    interval_s: float = 1.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from serve_app import runtime
        from serve_app.lag import KafkaLagSource

        lag = KafkaLagSource(self.settings.kafka, self.settings.kafka.group_id)
        try:
            while not self._stop.is_set():
                sample: dict[str, Any] = {"t": time.time()}
                try:
                    sample["replicas"] = runtime.replica_count(self.settings)
                except Exception:  # noqa: BLE001 - Serve not reachable from here: no replica series
                    sample["replicas"] = None
                try:
                    sample["lag"] = lag.read().total
                except Exception:  # noqa: BLE001
                    sample["lag"] = None
                    lag.close()
                self.samples.append(sample)
                self._stop.wait(self.interval_s)
        finally:
            lag.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
