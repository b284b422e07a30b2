"""``rerank-stream serve``: start Ray and the Serve app, and the same calls for the demo, the
benchmarks and the tests (start / get_score_handle / replica_count / stop).

Ray is started locally (dashboard off by default: it costs ~900 MB on small machines) unless
``serve.ray_address`` names a cluster. The model's location is resolved before any replica is
started, so a missing model fails in seconds with a message naming ``RERANK_MODEL`` instead of
a deployment retrying its constructor.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass

from schemas.settings import DEFAULT_MODEL, Settings, load_settings

log = logging.getLogger("serve_app.runtime")


@dataclass(frozen=True)
class Started:
    """What start() brought up, so stop() takes down exactly that."""

    app_name: str
    started_ray: bool


def start(settings: Settings, *, timeout_s: float = 600) -> Started:
    """Start (or join) Ray, deploy the app, block until every replica is running."""
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.engine.loader import resolve_model

    for key in settings.model.keys:  # fail fast: ModelUnavailableError names the missing model
        spec = settings.model.spec(key)
        resolve_model(spec.model, spec.revision)
    started_ray = False
    if not ray.is_initialized():
        if settings.serve.ray_address:
            ray.init(address=settings.serve.ray_address, log_to_driver=False)
        else:
            ray.init(include_dashboard=settings.serve.include_dashboard, log_to_driver=False)
            started_ray = True
    started = Started(settings.serve.app_name, started_ray)
    t0 = time.monotonic()
    try:
        serve.start(
            http_options={"host": settings.serve.http_host, "port": settings.serve.http_port},
            proxy_location=settings.serve.proxy_location,
        )
        serve.run(build_app(settings), name=settings.serve.app_name, route_prefix=settings.serve.route_prefix)
        _wait_running(settings, timeout_s - (time.monotonic() - t0))
    except BaseException:
        stop(started)  # leave nothing half-started behind
        raise
    log.info("app %r running in %.1f s", settings.serve.app_name, time.monotonic() - t0)
    return started


def _wait_running(settings: Settings, timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + max(timeout_s, 1)
    while time.monotonic() < deadline:
        app = serve.status().applications.get(settings.serve.app_name)
        if app is not None and str(app.status).endswith("RUNNING"):
            return
        if app is not None and str(app.status).endswith("DEPLOY_FAILED"):
            raise RuntimeError(f"Serve app {settings.serve.app_name!r} failed to deploy: {app.message}")
        time.sleep(0.2)
    raise TimeoutError(f"Serve app {settings.serve.app_name!r} not running after {timeout_s:.0f} s")


def get_score_handle(settings: Settings, key: str = DEFAULT_MODEL):
    """Handle of a model's Reranker deployment: score(ScoreRequest) -> list[float], info() -> ModelInfo."""
    from ray import serve

    return serve.get_deployment_handle(settings.reranker_deployment(key), app_name=settings.serve.app_name)


def replica_count(settings: Settings, key: str = DEFAULT_MODEL) -> int:
    """Running replicas of a model's Reranker now (0 when the app is not there)."""
    from ray import serve

    app = serve.status().applications.get(settings.serve.app_name)
    name = settings.reranker_deployment(key)
    if app is None or name not in app.deployments:
        return 0
    states = app.deployments[name].replica_states
    return int(sum(n for state, n in states.items() if str(state).endswith("RUNNING")))


def stop(started: Started) -> None:
    """Delete the app; shut Serve and Ray down only when start() started Ray."""
    import ray
    from ray import serve

    try:
        if serve.status().applications.get(started.app_name) is not None:
            serve.delete(started.app_name)
    finally:
        if started.started_ray:
            serve.shutdown()
            ray.shutdown()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (default: $RERANK_CONFIG).")
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from serve_app.engine import ModelKindError, ModelUnavailableError

    settings = load_settings(args.config)
    try:
        started = start(settings)
    except (ModelUnavailableError, ModelKindError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as exc:  # e.g. replicas failed to start
        print(f"error: the Serve app did not start: {exc}", file=sys.stderr)
        return 1
    s = settings.serve
    print(
        f"serving on http://{s.http_host}:{s.http_port}{s.route_prefix.rstrip('/')}/v1/rerank "
        f"(docs at /docs); Ctrl-C stops",
        flush=True,
    )
    stop_event = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())
    stop_event.wait()
    print("stopping Serve and Ray", flush=True)
    stop(started)
    return 0
