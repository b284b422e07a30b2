"""Autoscaling on queue depth, plus the Kafka backlog the replicas have not even seen yet.

Ray Serve's built-in signal (ongoing requests per replica vs ``target_ongoing_requests``) only
sees requests already sent to the deployment. Workers cap their in-flight jobs, so a growing
Kafka backlog is invisible to it. ``QueueDepthLagPolicy`` asks for
``max(queue-based, ceil(lag / lag_per_replica))`` replicas; Serve then applies the
upscale/downscale delays and the min/max bounds. The lag is read in a background thread: the
controller calls the policy every ~100 ms and must never wait on a broker. Without Kafka (or
when readings fail or go stale) the policy is exactly the built-in one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

log = logging.getLogger("ray.serve")


def decide(
    queue_desired: float, lag: int | None, lag_per_replica: int, lo: int, hi: int, activation_lag: int = 0
) -> tuple[int, str]:
    """Desired replicas within [lo, hi] and which signal drove the decision. A backlog at or below
    ``activation_lag`` asks for nothing (KEDA's activationLagThreshold)."""
    desired, reason = math.ceil(queue_desired), "queue"
    if lag is not None and lag > activation_lag:
        lag_desired = math.ceil(lag / lag_per_replica)
        if lag_desired > desired:
            desired, reason = lag_desired, "lag"
    return max(lo, min(hi, desired)), reason


class QueueDepthLagPolicy:
    """Class-based Serve autoscaling policy; kwargs come from ``policy_kwargs`` (JSON).

    ``kafka``: None = queue depth only; a dict of KafkaSettings fields = connection overrides on
    top of the controller's environment ({} = all from the environment).
    """

    def __init__(
        self,
        kafka: dict[str, Any] | None = None,
        group_id: str | None = None,
        topics: list[str] | None = None,
        lag_per_replica: int = 200,
        poll_interval_s: float = 2.0,
        source: Any = None,
    ):
        self.lag_per_replica = lag_per_replica
        self.poll_interval_s = poll_interval_s
        self.stale_after_s = max(3 * poll_interval_s, 10.0)
        self._source = source
        if source is None and kafka is not None:
            from schemas.settings import load_settings
            from serve_app.lag import KafkaLagSource

            # Connection from the kwargs; secrets (SASL password) from the controller's environment.
            settings = load_settings().kafka.model_copy(update=kafka)
            self._source = KafkaLagSource(settings, group_id or settings.group_id, topics)
        self._reading: Any = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_error_log = 0.0
        self._last: tuple[int, str] | None = None
        self._gauges: dict[str, Any] | None = None
        self.decisions: list[dict[str, Any]] = []  # recent decisions (inputs and outcome)
        self._totals: list[tuple[float, float]] = []  # (monotonic time, Serve's request total) of recent ticks

    # -- lag reading, off the controller's loop --------------------------------------------------

    def _poll_forever(self) -> None:
        while True:
            try:
                reading = self._source.read()
                with self._lock:
                    self._reading = reading
            except Exception as exc:  # noqa: BLE001 - a broker outage means "no lag signal"
                if time.monotonic() - self._last_error_log > 60:
                    log.warning("autoscaling: cannot read Kafka lag (%r); using queue depth only", exc)
                    self._last_error_log = time.monotonic()
                self._source.close()
            time.sleep(self.poll_interval_s)

    def current_reading(self) -> Any:
        """Latest fresh LagReading, or None (no Kafka, no reading yet, or stale)."""
        if self._source is None:
            return None
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll_forever, name="kafka-lag", daemon=True)
            self._thread.start()
        with self._lock:
            reading = self._reading
        if reading is None or time.time() - reading.at > self.stale_after_s:
            return None
        return reading

    def current_lag(self) -> int | None:
        """Latest fresh total lag, or None (no Kafka, no reading yet, or stale)."""
        reading = self.current_reading()
        return None if reading is None else reading.total

    # -- the policy ---------------------------------------------------------------------------------

    def _held_requests(self, ctx) -> float:
        """The largest request total Serve reported within the last 3 look-back periods.

        On a busy host Serve's total flickers between the real queue and 0 from tick to tick (handle
        reports arriving late fall out of the look-back window); holding the recent peak keeps one
        stale tick from cancelling an upscale or starting a downscale. It delays scale-down by at most
        the hold, on top of Serve's downscale delay."""
        now = time.monotonic()
        hold_s = 3 * float(getattr(ctx.config, "look_back_period_s", 30.0))
        self._totals = [(t, n) for t, n in self._totals if now - t <= hold_s] + [(now, float(ctx.total_num_requests))]
        return max(n for _, n in self._totals)

    def __call__(self, ctx) -> tuple[float, dict[str, Any]]:
        queue_desired, state = replica_queue_length_autoscaling_policy(ctx)
        target = float(getattr(ctx.config, "target_ongoing_requests", 0) or 0)
        if target > 0:
            queue_desired = max(queue_desired, self._held_requests(ctx) / target)
        lag = self.current_lag()
        lo = getattr(ctx, "capacity_adjusted_min_replicas", 0) or 0
        hi = getattr(ctx, "capacity_adjusted_max_replicas", None) or max(ctx.current_num_replicas, 1) * 1000
        desired, reason = decide(queue_desired, lag, self.lag_per_replica, lo, hi)
        self._report(ctx, queue_desired, lag, desired, reason)
        return desired, state

    def _report(self, ctx, queue_desired: float, lag: int | None, desired: int, reason: str, **extra: Any) -> None:
        decision = {
            "at": time.time(),
            "current": ctx.current_num_replicas,
            "requests": float(ctx.total_num_requests),
            "queue_desired": float(queue_desired),
            "lag": lag,
            "desired": desired,
            "reason": reason,
            **extra,
        }
        self.decisions = (self.decisions + [decision])[-100:]
        if (desired, reason) != self._last:
            log.info("autoscaling %s: %s", getattr(ctx, "deployment_name", "?"), decision)
            self._last = (desired, reason)
        try:
            if self._gauges is None:
                from ray.util.metrics import Gauge

                tags = ("deployment",)  # the Reranker's policy and the consumers' run in the same controller
                self._gauges = {
                    "lag": Gauge(
                        "rerank_autoscaler_kafka_lag",
                        "Kafka backlog seen by the autoscaling policy (jobs).",
                        tag_keys=tags,
                    ),
                    "desired": Gauge(
                        "rerank_autoscaler_desired_replicas", "Replicas the policy asks for.", tag_keys=tags
                    ),
                    "queue": Gauge(
                        "rerank_autoscaler_queue_desired_replicas",
                        "Replicas the queue depth alone asks for.",
                        tag_keys=tags,
                    ),
                }
            tag = {"deployment": str(getattr(ctx, "deployment_name", "?"))}
            self._gauges["desired"].set(desired, tags=tag)
            self._gauges["queue"].set(float(queue_desired), tags=tag)
            if lag is not None:
                self._gauges["lag"].set(lag, tags=tag)
        except Exception:  # noqa: BLE001 - metrics are best effort (e.g. outside a Ray worker)
            pass


class StuckPartitions:
    """Partitions whose committed offset has not moved for ``after_s`` while they have lag (KEDA's
    excludePersistentLag, with a time window instead of one reading): more consumers cannot help them,
    so their backlog must not pin the consumer count at its maximum."""

    def __init__(self, after_s: float):
        self.after_s = after_s
        self._since: dict[tuple[str, int], tuple[int | None, float]] = {}  # partition -> (committed, since)

    def update(self, lags: dict[tuple[str, int], int], committed: dict, now: float) -> set[tuple[str, int]]:
        stuck = set()
        for tp, lag in lags.items():
            if lag <= 0:
                self._since.pop(tp, None)
                continue
            position = committed.get(tp)
            seen = self._since.get(tp)
            if seen is None or seen[0] != position:
                self._since[tp] = (position, now)
            elif now - seen[1] >= self.after_s:
                stuck.add(tp)
        return stuck


class ConsumerLagPolicy(QueueDepthLagPolicy):
    """Autoscaling of the Kafka consumers themselves (workers/consumer_deployment.py): they get no
    requests, so the backlog alone decides: ``ceil(lag / lag_per_replica)`` consumers within
    [min, max], never more than the input partitions (a consumer beyond them would idle), none asked
    for at or below ``activation_lag``, persistently stuck partitions left out. Without a fresh
    reading the count is held (a broker outage is no reason to add or remove consumers)."""

    def __init__(self, *, activation_lag: int = 0, stuck_after_s: float = 120.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.activation_lag = activation_lag
        self.stuck = StuckPartitions(stuck_after_s)

    def __call__(self, ctx) -> tuple[float, dict[str, Any]]:
        reading = self.current_reading()
        current = ctx.current_num_replicas
        if reading is None:
            return current, ctx.policy_state
        # Nobody consumes at 0 replicas: every partition would look stuck, and nothing would start.
        stuck = self.stuck.update(reading.partitions, reading.committed, reading.at) if current else set()
        lag = reading.total - sum(reading.partitions[tp] for tp in stuck)
        lo = getattr(ctx, "capacity_adjusted_min_replicas", 0) or 0
        hi = getattr(ctx, "capacity_adjusted_max_replicas", None) or max(current, 1)
        if reading.partitions:
            hi = min(hi, len(reading.partitions))
        desired, _ = decide(0.0, lag, self.lag_per_replica, lo, max(lo, hi), self.activation_lag)
        self._report(ctx, 0.0, lag, desired, "lag" if lag > self.activation_lag else "idle", stuck=sorted(stuck))
        return desired, ctx.policy_state
