"""`rerank-stream worker` as a newcomer starts it: when Kafka or the Serve app is missing it says which
and what to start, in one line, exit 2, no traceback, and never claims to be ready."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.net import free_port

ROOT = Path(__file__).resolve().parent.parent


def _worker(env_extra: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANK_", "RAY_ADDRESS"))}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_kafka_is_named_with_what_to_start():
    proc = _worker({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Kafka is not reachable" in proc.stderr and "KAFKA_BOOTSTRAP_SERVERS" in proc.stderr
    assert "ready" not in proc.stdout and "Traceback" not in proc.stderr


def test_missing_serve_app_is_named_with_what_to_start(kafka_bootstrap):
    proc = _worker({"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "RERANK_SERVE_RAY_ADDRESS": f"127.0.0.1:{free_port()}"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not reachable" in proc.stderr and "rerank-stream serve" in proc.stderr
    assert "ready" not in proc.stdout and "Traceback" not in proc.stderr
