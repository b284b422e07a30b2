"""Session fixtures of the Serve tests: one local Ray cluster (in this test process, so it dies
with it) and Serve apps on the tiny Qwen3 model, started through ``serve_app.runtime`` exactly
as ``rerank-stream serve`` starts them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from schemas.settings import Settings
from tests.support.net import free_port


@dataclass
class ServeStack:
    settings: Settings
    base_url: str

    def handle(self):
        from serve_app import runtime

        return runtime.get_score_handle(self.settings)


def serve_settings(
    model_dir,
    redis_url: str,
    app_name: str,
    route_prefix: str,
    http_port: int,
    *,
    kafka: dict | None = None,
    limits: dict | None = None,
    **serve: object,
) -> Settings:
    """Test settings: CPU, no GPU reservation (several apps share 2 cores), run-unique cache prefix."""
    base_serve = {
        "app_name": app_name,
        "route_prefix": route_prefix,
        "http_port": http_port,
        "num_cpus": 0,
        "min_replicas": 1,
        "max_replicas": 1,
        "scale_on_kafka_lag": False,
        "batch_wait_timeout_s": 0.02,
    }
    return Settings.model_validate(
        {
            "model": {"model": str(model_dir), "device": "cpu", "dtype": "float32"},  # parity tests: exact scores
            "redis": {"url": redis_url, "key_prefix": f"test:{uuid.uuid4().hex[:8]}:"},
            "serve": {**base_serve, **serve},
            "kafka": kafka or {},
            "limits": limits or {},
        }
    )


@pytest.fixture(scope="session")
def serve_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def serve_stack(tiny_qwen_dir, redis_url: str, serve_port: int):
    """The main test app at "/": generous queues (the worker tests send many jobs at once)."""
    import ray
    from ray import serve

    from serve_app import runtime

    settings = serve_settings(
        tiny_qwen_dir,
        redis_url,
        "rerank-tests",
        "/",
        serve_port,
        limits={"max_documents": 64, "max_document_chars": 4000, "max_total_tokens": 20000},
        max_batch_size=8,
        max_queued_requests=-1,
    )
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = runtime.start(settings)
    yield ServeStack(settings, f"http://127.0.0.1:{serve_port}")
    runtime.stop(started)
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def extra_app(serve_stack, tiny_qwen_dir, redis_url: str):
    """Factory of short-lived extra apps on the same Ray cluster (deleted after the test)."""
    from serve_app import runtime

    made = []

    def make(name: str, model_dir=None, **kw) -> ServeStack:
        """An app at ``/<name>`` serving ``model_dir`` (default: the tiny Qwen3)."""
        settings = serve_settings(
            model_dir or tiny_qwen_dir, redis_url, name, f"/{name}", serve_stack.settings.serve.http_port, **kw
        )
        made.append(runtime.start(settings))
        return ServeStack(settings, f"{serve_stack.base_url}/{name}")

    yield make
    for started in made:
        runtime.stop(started)
