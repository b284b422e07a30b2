"""``rerank-stream worker``: run the Kafka worker standalone, or as N Ray actors (``--ray``).

Both modes run the very same ``Worker`` loop; only where the process lives differs. The score
client is the Ray Serve deployment handle (``--direct-engine`` loads the model in-process instead,
for benchmarks and debugging without Serve).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
import threading
import time

from schemas.settings import Settings, load_settings

log = logging.getLogger("workers.runner")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: $RERANK_CONFIG).")
    parser.add_argument("--ray", action="store_true", help="Run the worker loop in Ray actors in the cluster.")
    parser.add_argument("--replicas", type=int, default=1, help="Number of worker actors with --ray.")
    parser.add_argument(
        "--direct-engine", action="store_true", help="Score with an in-process engine instead of Serve."
    )
    parser.add_argument("--group-id", help="Consumer group (default: kafka.group_id).")
    parser.add_argument("--log-level", default="INFO")


class NotReachableError(RuntimeError):
    """A service the worker needs is not there; the message says what to start."""


def make_client(settings: Settings, direct_engine: bool = False) -> dict:
    """The worker's ScoreClients, one per served model key: Serve deployment handles, or in-process engines
    (``--direct-engine``).

    Proves the model side answers (one ``info()`` call per model) before the worker says it is ready.
    """
    from serve_app.scoring.client import EngineScoreClient, ServeScoreClient

    if direct_engine:
        from serve_app.engine import load_engine

        return {key: EngineScoreClient(load_engine(settings.model.spec(key))) for key in settings.model.keys}
    import ray

    address = settings.serve.ray_address or "auto"
    try:
        _check_listening(address)  # ray.init keeps retrying an address where nothing listens
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
        from serve_app.runtime import get_score_handle

        clients = {
            key: ServeScoreClient(get_score_handle(settings, key), settings.worker.scoring_timeout_s)
            for key in settings.model.keys
        }
        for client in clients.values():
            client.info()
    except Exception as exc:  # noqa: BLE001 - any failure here means "the Serve app is not there"
        raise NotReachableError(
            f"the Serve app {settings.serve.app_name!r} is not reachable (Ray address {address!r}: "
            f"{type(exc).__name__}: {str(exc)[:200]}). Start it first with `rerank-stream serve`, or set "
            "RERANK_SERVE_RAY_ADDRESS to the cluster that runs it."
        ) from None
    return clients


def _check_listening(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast when a host:port Ray address has nothing listening ('auto' finds a local cluster itself)."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        return
    with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
        pass


def check_kafka(settings: Settings, timeout_s: float = 10.0) -> None:
    """One metadata round trip to the brokers, bounded, before the worker says it is ready."""
    from workers.kafka_io import make_admin

    try:
        admin = make_admin(settings, request_timeout_ms=int(timeout_s * 1000))
        try:
            admin.describe_cluster()
        finally:
            admin.close()
    except Exception as exc:  # noqa: BLE001
        raise NotReachableError(
            f"Kafka is not reachable at {settings.kafka.bootstrap_servers} ({type(exc).__name__}: {str(exc)[:200]}). "
            "Start a broker (`deploy/local/services.sh start` locally) or set KAFKA_BOOTSTRAP_SERVERS."
        ) from None


def run_worker(
    settings: Settings, *, direct_engine: bool = False, group_id: str | None = None, worker_id: str | None = None
) -> int:
    """One worker in this process until SIGTERM/SIGINT; 'ready' once Kafka and the model side answered."""
    from workers.metrics import serve_metrics
    from workers.worker import Worker

    check_kafka(settings)
    worker = Worker(settings, make_client(settings, direct_engine), group_id=group_id, worker_id=worker_id)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: worker.stop())
    serve_metrics(settings.worker.metrics_port)
    worker.open()
    print(f"worker {worker.worker_id} ready", flush=True)
    return worker.run()


@functools.cache
def worker_actor_class():
    """The Ray actor that runs one ``Worker`` loop in its own process (``--ray`` and the load harness);
    built on first use, so importing this module loads no Ray."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1)
    class WorkerActor:
        """Runs the same Worker loop in a thread of the actor process."""

        def __init__(self, settings_json: str, worker_id: str, group_id: str | None = None):
            from workers.worker import Worker

            s = Settings.model_validate_json(settings_json)
            self.worker = Worker(s, make_client(s), group_id=group_id, worker_id=worker_id)
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

        def _run(self) -> None:
            """A loop that ends on its own (an error) takes the actor down, so Ray restarts it: an actor
            alive around a dead loop would hold no partitions and do nothing, silently (issue 12)."""
            try:
                failed = self.worker.run() != 0
            except BaseException:
                log.exception("worker loop of %s failed", self.worker.worker_id)
                failed = True
            if failed and not self.worker.stop_event.is_set():
                os._exit(1)

        def stop(self) -> dict:
            self.worker.stop()
            self.thread.join(timeout=120)
            return dict(self.worker.counts)

        def alive(self) -> bool:
            return self.thread.is_alive()

        def partitions(self) -> int:
            return len(self.worker.assignment)

        def cache_stats(self) -> dict[str, int]:
            return dict(self.worker.cache.stats)

    return WorkerActor


def start_worker_actors(settings: Settings, replicas: int, group_id: str | None = None) -> list:
    """``replicas`` worker actors in the connected Ray cluster, returned once every one owns partitions
    (or the wait timed out: more actors than partitions leaves some idle by design)."""
    import ray

    from workers.worker import default_worker_id

    cls = worker_actor_class()
    actors = [
        cls.remote(settings.model_dump_json(), f"{default_worker_id()}#{i}", group_id)  # type: ignore[attr-defined]
        for i in range(replicas)
    ]
    ray.get([a.alive.remote() for a in actors])  # constructors done
    _await_assignments(actors)
    return actors


def _run_ray(settings: Settings, replicas: int, group_id: str | None) -> int:
    import ray

    ray.init(address=settings.serve.ray_address or "auto", log_to_driver=True, ignore_reinit_error=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    actors = start_worker_actors(settings, replicas, group_id)
    print(f"{replicas} worker actors ready", flush=True)
    while not stop.is_set():
        time.sleep(0.5)
    print("stopping worker actors:", ray.get([a.stop.remote() for a in actors]), flush=True)
    return 0


def _await_assignments(actors: list, timeout_s: float = 60.0) -> None:
    """Ready = every actor owns partitions (the group has settled), or the timeout passed.

    With more actors than input partitions some stay idle by design; that is logged, not fatal.
    """
    import ray

    deadline = time.monotonic() + timeout_s
    counts: list[int] = []
    while time.monotonic() < deadline:
        counts = ray.get([a.partitions.remote() for a in actors])
        if all(counts):
            return
        time.sleep(0.2)
    log.warning("worker actors own %s partitions after %.0f s; idle actors wait for a rebalance", counts, timeout_s)


def run(args: argparse.Namespace) -> int:
    from workers.logs import configure
    from workers.topics import MissingTopicsError

    settings = load_settings(args.config)
    configure(args.log_level, settings.worker.log_interval_s)
    try:
        if args.ray:
            return _run_ray(settings, args.replicas, args.group_id)
        return run_worker(settings, direct_engine=args.direct_engine, group_id=args.group_id)
    except (MissingTopicsError, NotReachableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
