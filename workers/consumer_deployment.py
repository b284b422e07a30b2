"""``rerank-stream consumers``: the Kafka consumers as replicas of a Ray Serve deployment scaled on lag.

Serve already restarts, places and scales replicas, so a consumer is a Serve replica running the very
``Worker`` loop of ``rerank-stream worker`` in a thread, and the deployment's autoscaling policy is
``serve_app.autoscaling.ConsumerLagPolicy``: ``ceil(lag / worker.lag_per_consumer)`` consumers within
``worker.min_consumers..max_consumers``, never more than the input partitions, nothing asked for at or
below ``worker.activation_lag``, persistently stuck partitions left out.

- Identity: a replica's Serve rank is its slot; ``<group>.consumer-<slot>`` is its worker id, static
  ``group.instance.id`` and (exactly-once) transactional id. A replica Serve starts in place of a dead
  one takes the freed rank, so it rejoins as the same static member: no rebalance, and it fences the
  dead one's transaction. If Serve renumbers a running replica (ranks stay contiguous after a
  scale-down), the replica moves to its new slot (finish, commit, leave, rejoin) so two live replicas
  never share an id.
- Leaving: scaled down (or the app deleted), Serve calls ``__del__`` within
  ``graceful_shutdown_timeout_s``: in-flight jobs finish and are published, offsets are committed, and
  the static member is removed from the group at once so its partitions move without waiting for the
  session timeout.
- Health: a loop that ended on its own fails ``check_health``; Serve replaces the replica.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
import time
from typing import Any

from schemas.settings import Settings, load_settings

log = logging.getLogger("workers.consumer_deployment")

DEPLOYMENT = "KafkaConsumer"
POLICY = "serve_app.autoscaling:ConsumerLagPolicy"


def app_name(settings: Settings) -> str:
    """The consumers' Serve application, next to the Reranker's."""
    return f"{settings.serve.app_name}-consumers"


def bounds(settings: Settings, partitions: int) -> tuple[int, int]:
    """(min, max) consumers: worker.min/max_consumers, never more than the input partitions."""
    high = max(1, min(settings.worker.max_consumers, partitions))
    return min(settings.worker.min_consumers, high), high


def deployment_options(settings: Settings, partitions: int) -> dict[str, Any]:
    """Serve options of the consumer deployment; autoscaling keys are checked like the Reranker's."""
    from serve_app.app import _lag_connection, check_autoscaling_keys

    w, s = settings.worker, settings.serve
    low, high = bounds(settings, partitions)
    autoscaling = {
        "min_replicas": low,
        "max_replicas": high,
        "initial_replicas": low,
        "upscale_delay_s": w.consumer_upscale_delay_s,
        "downscale_delay_s": w.consumer_downscale_delay_s,
        "metrics_interval_s": s.metrics_interval_s,
        "look_back_period_s": s.look_back_period_s,
        "policy": {
            "policy_function": POLICY,
            "policy_kwargs": {
                "kafka": _lag_connection(settings),
                "group_id": settings.kafka.group_id,
                "topics": settings.kafka.input_topics,
                "lag_per_replica": w.lag_per_consumer,
                "poll_interval_s": s.lag_poll_interval_s,
                "activation_lag": w.activation_lag,
                "stuck_after_s": w.stuck_partition_s,
            },
        },
    }
    check_autoscaling_keys(autoscaling)
    return {
        "name": DEPLOYMENT,
        "ray_actor_options": {"num_cpus": w.consumer_num_cpus},
        "autoscaling_config": autoscaling,
        # A leaving consumer finishes its in-flight jobs (each bounded by the scoring timeout), then commits.
        "graceful_shutdown_timeout_s": w.scoring_timeout_s + 30,
        "graceful_shutdown_wait_loop_s": 0.5,
        "health_check_period_s": 5,
        "max_constructor_retry_count": 3,
    }


class ConsumerReplica:
    """One Kafka consumer per Serve replica: the Worker loop in a thread."""

    async def __init__(self, settings_json: str):  # type: ignore[misc]  # Serve awaits an async constructor
        from ray import serve

        from workers.logs import configure

        self.settings = Settings.model_validate_json(settings_json)
        configure("INFO", self.settings.worker.log_interval_s)  # the worker's lines in the replica's log
        self._lock = threading.Lock()
        self._closing = False
        self._switching = False
        self.ended: str | None = None
        self.slot = _rank(serve.get_replica_context().rank)
        # Blocking calls (Kafka, the Reranker's info()) must not run on the replica's event loop.
        await asyncio.to_thread(self._start, self.slot)

    def _start(self, slot: int) -> None:
        from serve_app.runtime import get_score_handle
        from serve_app.scoring.client import ServeScoreClient
        from workers.worker import Worker

        s = self.settings
        name = self._name(slot)
        client = ServeScoreClient(get_score_handle(s), s.worker.scoring_timeout_s)
        worker = Worker(s, client, worker_id=name, instance_id=name)
        worker.open()  # fails the constructor loudly (Serve retries it) when Kafka or topics are missing
        self.worker, self.ended = worker, None
        self.thread = threading.Thread(target=self._run, args=(worker,), name=f"consumer-{slot}", daemon=True)
        self.thread.start()
        log.info("consumer %s started (slot %d)", name, slot)

    def _run(self, worker: Any) -> None:
        try:
            rc = worker.run()
            self.ended = None if rc == 0 else f"exit code {rc}: {worker.fatal!r}"
        except BaseException as exc:  # reported by check_health
            log.exception("consumer loop of %s failed", worker.worker_id)
            self.ended = repr(exc)

    def check_health(self) -> None:
        """Serve replaces a replica whose loop ended on its own (a publish failure, a broker error)."""
        if self._closing or self._switching:
            return
        if not self.thread.is_alive():
            raise RuntimeError(f"consumer {self.worker.worker_id} stopped: {self.ended or 'loop ended'}")

    def reconfigure(self, user_config: Any, rank: Any = None) -> None:
        """Serve renumbered this replica: move to the new slot before a new replica can claim the old id."""
        if rank is None or _rank(rank) == self.slot or self._closing:
            return
        new = _rank(rank)
        threading.Thread(target=self._switch, args=(new,), name="consumer-switch", daemon=True).start()

    def _switch(self, slot: int) -> None:
        from workers.kafka_io import static_members

        with self._lock:
            if self._closing:
                return
            self._switching = True
            try:
                log.info("consumer slot %d -> %d", self.slot, slot)
                self._stop_worker()
                # The slot's previous holder may still be leaving (a scale-down): joining under its id now
                # would fence it mid-commit. Wait until it is gone, at most one session timeout.
                name = self._name(slot)
                deadline = time.monotonic() + self.settings.kafka.session_timeout_ms / 1000 + 5
                while time.monotonic() < deadline and name in static_members(
                    self.settings, self.settings.kafka.group_id
                ):
                    time.sleep(0.5)
                self.slot = slot
                self._start(slot)
            finally:
                self._switching = False

    def _name(self, slot: int) -> str:
        return f"{self.settings.kafka.group_id}.consumer-{slot}"

    def _stop_worker(self) -> None:
        self.worker.stop(leave_group=True)
        self.thread.join(self.settings.worker.scoring_timeout_s + 20)

    def status(self) -> dict[str, Any]:
        import ray

        w = self.worker
        return {
            "slot": self.slot,
            "worker_id": w.worker_id,
            "instance_id": w.instance_id,
            "node_id": ray.get_runtime_context().get_node_id(),
            "partitions": sorted(w.assignment),
            "counts": dict(w.counts),
            "in_flight": w.in_flight,
            "alive": self.thread.is_alive(),
        }

    async def __del__(self) -> None:
        """Scale-down or app deletion: finish in-flight jobs, commit, leave the group (within Serve's
        graceful_shutdown_timeout_s), off the event loop."""
        if getattr(self, "_lock", None) is None or self._closing:
            return
        self._closing = True
        await asyncio.to_thread(self._leave)

    def _leave(self) -> None:
        with self._lock:
            if getattr(self, "worker", None) is not None:
                self._stop_worker()
                log.info("consumer %s left: %s", self.worker.worker_id, self.worker.counts)


def _rank(rank: Any) -> int:
    """Serve's replica rank: an int in older releases, a ReplicaRank (global ``rank``) in newer ones."""
    return int(getattr(rank, "rank", rank) or 0)


# -- starting and stopping the app --------------------------------------------------------------------


def input_partitions(settings: Settings) -> int:
    """Partitions of the input topics as the brokers report them (the most consumers that can be busy)."""
    from workers.kafka_io import make_consumer

    consumer = make_consumer(settings, group_id=None)
    try:
        return sum(len(consumer.partitions_for_topic(t) or ()) for t in settings.kafka.input_topics)
    finally:
        consumer.close()


def start(settings: Settings, *, timeout_s: float = 180) -> str:
    """Deploy the consumer app on the Ray cluster this process is connected to; wait until it runs."""
    from ray import serve

    from serve_app import runtime

    partitions = input_partitions(settings)
    name = app_name(settings)
    consumer = serve.deployment(ConsumerReplica).options(**deployment_options(settings, partitions))  # type: ignore[attr-defined]
    serve.run(consumer.bind(settings.model_dump_json()), name=name, route_prefix=None, blocking=False)  # type: ignore[attr-defined]
    runtime._wait_running(
        settings.model_copy(update={"serve": settings.serve.model_copy(update={"app_name": name})}), timeout_s
    )
    low, high = bounds(settings, partitions)
    log.info("consumer app %r running: %d..%d consumers over %d input partitions", name, low, high, partitions)
    return name


def stop(settings: Settings) -> None:
    """Delete the consumer app: every replica finishes its in-flight jobs, commits and leaves the group."""
    from ray import serve

    name = app_name(settings)
    if serve.status().applications.get(name) is not None:
        serve.delete(name)


def replicas(settings: Settings) -> list[dict[str, Any]]:
    """Running consumer replicas with their node (Serve's own bookkeeping: no dashboard needed)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    assert client is not None
    details = client.get_serve_details()
    app = details.get("applications", {}).get(app_name(settings)) or {}
    dep = app.get("deployments", {}).get(DEPLOYMENT) or {}
    return [r for r in dep.get("replicas", []) if str(r.get("state", "")).endswith("RUNNING")]


# -- the CLI -----------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: $RERANK_CONFIG).")
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    from workers.logs import configure
    from workers.runner import NotReachableError, check_kafka, make_client
    from workers.topics import MissingTopicsError, ensure_topics

    settings = load_settings(args.config)
    configure(args.log_level, settings.worker.log_interval_s)
    try:
        check_kafka(settings)
        ensure_topics(settings)
        make_client(settings)  # joins the cluster at serve.ray_address and proves the Reranker answers
        name = start(settings)
    except (MissingTopicsError, NotReachableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: the consumer app did not start: {exc}", file=sys.stderr)
        return 1
    low, high = bounds(settings, input_partitions(settings))
    print(
        f"consumers ready: app {name!r}, {low}..{high} replicas scaled on the lag of {settings.kafka.group_id!r}; Ctrl-C stops",
        flush=True,
    )
    stop_event = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())
    while not stop_event.wait(1.0):
        pass
    print("stopping consumers (in-flight jobs finish and commit)", flush=True)
    stop(settings)
    return 0
