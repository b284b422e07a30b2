"""Cluster mode from Python, for its tests and the chaos run: the local multi-node Ray cluster
(deploy/local/ray.sh), the three-broker Kafka (deploy/local/kafka-cluster.sh) and the
``rerank-stream serve`` / ``consumers`` CLIs as subprocesses, plus a
look at where Serve placed replicas. The Ray-side look runs in a subprocess: a process joins one Ray
cluster at a time, and the caller may already be in another (the test suite's own).

``python -m load_tests.cluster placement ADDRESS`` prints that look as one JSON line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "local"


class Script:
    """One deploy/local script with its own state directory (RERANK_LOCAL_DIR) and environment."""

    def __init__(self, name: str, state_dir: Path, env: dict[str, str]):
        self.path = DEPLOY / name
        self.env = {**os.environ, "RERANK_LOCAL_DIR": str(state_dir), "PYTHON": sys.executable, **env}

    def __call__(self, *args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.path), *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{self.path.name} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done


class RayCluster:
    """A head plus N worker nodes on this machine (deploy/local/ray.sh), torn down by ``stop``."""

    def __init__(self, state_dir: Path, port: int, worker_cpus: int = 2):
        self.address = f"127.0.0.1:{port}"
        self.script = Script(
            "ray.sh",
            state_dir,
            {
                "RAY_LOCAL_PORT": str(port),
                "RAY_LOCAL_WORKER_CPUS": str(worker_cpus),
                "RAY_LOCAL_TEMP_DIR": f"/tmp/rr-ray-{port}",
            },
        )

    @property
    def client_env(self) -> dict[str, str]:
        """What a process joining this cluster needs (ray.sh keeps Ray's token auth off, see there)."""
        return {"RERANK_SERVE_RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "disabled"}

    def start(self, workers: int = 2) -> RayCluster:
        self.script("start", "--workers", str(workers))
        return self

    def kill_node(self, i: int) -> None:
        self.script("kill-node", str(i))

    def start_node(self, i: int) -> None:
        self.script("start-node", str(i))

    def stop(self) -> None:
        self.script("stop", timeout=120, check=False)
        shutil.rmtree(self.script.env["RAY_LOCAL_TEMP_DIR"], ignore_errors=True)  # Ray's session files

    def placement(self) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "load_tests.cluster", "placement", self.address],
            capture_output=True,
            text=True,
            timeout=90,
            cwd=ROOT,
            env={**os.environ, **self.client_env},
        )
        if done.returncode != 0:
            raise RuntimeError(f"placement look failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


class KafkaCluster:
    """Three KRaft brokers (deploy/local/kafka-cluster.sh) with their own data, wiped by ``stop``."""

    def __init__(self, state_dir: Path, base_port: int | None = None):
        self.base_port = base_port or free_port_block()
        self.script = Script("kafka-cluster.sh", state_dir, {"KAFKA_CLUSTER_PORT": str(self.base_port)})
        self.bootstrap = ",".join(f"127.0.0.1:{self.base_port + i}" for i in range(3))

    def start(self) -> KafkaCluster:
        self.script("start")
        return self

    def kill_broker(self, node: int) -> None:
        self.script("kill-broker", str(node))

    def start_broker(self, node: int) -> None:
        self.script("start-broker", str(node))

    def leader(self, topic: str, partition: int) -> int:
        return int(self.script("leader", topic, str(partition)).stdout.strip())

    def stop(self) -> None:
        self.script("reset", timeout=120, check=False)


def free_port() -> int:
    """A free TCP port on loopback (for the run's Redis, Ray head and HTTP proxy)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block() -> int:
    """A base port P with P..P+2 (brokers) and P+10..P+12 (controllers) free on loopback."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(40000, 60000)
        ports = [base + i for i in (0, 1, 2, 10, 11, 12)]
        with contextlib.ExitStack() as stack:
            try:
                for port in ports:
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise RuntimeError("no free block of ports for a local Kafka cluster")


class Cli:
    """``rerank-stream <command>`` in a subprocess; output kept for assertions and failure messages."""

    def __init__(self, command: str, env: dict[str, str], *args: str):
        self.command = command
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", command, *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stopping it never signals the caller
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"rerank-stream {self.command} never said {text!r} (rc={self.proc.poll()}):\n{self.output[-4000:]}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM (a clean stop: in-flight work finishes), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)
        return self.proc.returncode


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; the last value or exception is in the error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - e.g. a look during a node failure
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f} s (last: {last!r})")


def _placement(address: str) -> dict[str, Any]:
    """Alive nodes (id -> rerank-node label) and running replicas per app/deployment (their node ids)."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    nodes = {n["NodeID"]: (n.get("Labels") or {}).get("rerank-node", "?") for n in ray.nodes() if n["Alive"]}
    serve.status()  # connects to the controller
    client = _get_global_client()
    assert client is not None
    replicas: dict[str, list[str]] = {}
    for app, details in client.get_serve_details().get("applications", {}).items():
        for name, dep in details.get("deployments", {}).items():
            replicas[f"{app}/{name}"] = [
                r["node_id"] for r in dep.get("replicas", []) if str(r.get("state", "")).endswith("RUNNING")
            ]
    return {"nodes": nodes, "replicas": replicas}


if __name__ == "__main__":
    if sys.argv[1:2] == ["placement"]:
        print(json.dumps(_placement(sys.argv[2])))
    else:
        sys.exit("usage: python -m load_tests.cluster placement ADDRESS")
