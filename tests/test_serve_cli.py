"""``rerank-stream serve`` as an operator runs it: a missing model fails fast and says which setting
to fix; a real start serves HTTP and Ctrl-C (SIGINT) stops Ray and the app cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.support.net import free_port


def _serve(env_extra: dict[str, str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_extra}
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "serve"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_missing_model_fails_fast_naming_the_setting(tmp_path):
    t0 = time.monotonic()
    proc = _serve({"RERANK_MODEL": str(tmp_path / "no-such-model")})
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out[-2000:]
    assert "RERANK_MODEL" in out and "Traceback" not in out
    assert time.monotonic() - t0 < 30  # includes interpreter + torch import; the resolve itself is instant


def test_serve_command_serves_and_stops_on_ctrl_c(tiny_qwen_dir, redis_url):
    port = free_port()
    proc = _serve(
        {
            "RERANK_MODEL": str(tiny_qwen_dir),
            "RERANK_MODEL_DEVICE": "cpu",
            "RERANK_SERVE_HTTP_PORT": str(port),
            "RERANK_SERVE_NUM_CPUS": "0",
            "RERANK_SERVE_SCALE_ON_KAFKA_LAG": "false",
            "REDIS_URL": redis_url,
            "RERANK_REDIS_KEY_PREFIX": f"cli:{port}:",
        }
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("serving on"):
                break
        assert lines and lines[-1].startswith("serving on"), "".join(lines)[-3000:]
        r = httpx.post(f"http://127.0.0.1:{port}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=60)
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out[-3000:]
        assert "stopping Serve and Ray" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
