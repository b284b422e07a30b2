"""The image definition, the compose file and the documented commands, checked offline: hadolint, Docker
Compose's own validation (no engine), settings names, and the lock covering everything the image installs."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from schemas.http import RerankRequest
from schemas.messages import RerankJob
from schemas.settings import load_settings, warn_unknown_env_vars
from serve_app.app import SERVE_CONFIG, serve_config
from tests.support.manifest_docs import unknown_settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def _tool(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{name} is missing from {BIN}: run `make install` (it comes with the dev extra)"
    return str(path)


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


# -- Dockerfile -----------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    proc = _run(_tool("hadolint"), "--no-color", str(DOCKERFILE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_can_fail(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install wget\n")
    proc = _run(_tool("hadolint"), "--no-color", str(bad))
    assert proc.returncode != 0 and "DL3006" in proc.stdout, proc.stdout


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops a path of the context (its exclusion patterns; no `!` rules are used)."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(p, pat.rstrip("/")) or fnmatch.fnmatch(p, pat.removeprefix("**/"))
        for p in prefixes
        for pat in patterns
    )


def test_image_definition_keeps_its_promises():
    steps = _instructions(DOCKERFILE.read_text())
    froms = [args for kw, args in steps if kw == "FROM"]
    assert any(f.endswith("AS deps-cpu") for f in froms) and any(f.endswith("AS deps-cuda") for f in froms)
    assert froms[-1] == "deps-${VARIANT} AS runtime", "one definition: the variant picks the dependency stage"
    runtime = steps[max(i for i, (kw, _) in enumerate(steps) if kw == "FROM") :]
    user = [args for kw, args in runtime if kw == "USER"][-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0, f"USER {user}: numeric and not root"
    assert any(kw == "VOLUME" and "/models" in args for kw, args in runtime)
    assert any(kw == "ENV" and "HF_HOME=/models" in args for kw, args in runtime)
    [health] = [args for kw, args in runtime if kw == "HEALTHCHECK"]
    assert "/healthz" in health and "/readyz" in health
    text = [f"{kw} {args}" for kw, args in steps]
    lock_copy = next(i for i, s in enumerate(text) if s.startswith("COPY requirements.lock"))
    deps = [i for i, s in enumerate(text) if "pip install -c requirements.lock" in s]
    code = next(i for i, s in enumerate(text) if "pip install" in s and "--no-deps" in s)
    assert len(deps) == 2 and lock_copy < min(deps) and max(deps) < code, "dependency layers come before the code"
    patterns = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    for must_go in (".git", ".venv", "tests", ".run"):
        assert _ignored(must_go, patterns), f".dockerignore keeps {must_go}"
    copied = [s for kw, args in steps if kw == "COPY" for s in args.split()[:-1] if not s.startswith("--")]
    installed = ["pyproject.toml", "README.md", "schemas/settings.py", "serve_app/app.py", "workers/cli.py"]
    assert set(copied) == {"requirements.lock", "pyproject.toml", "deploy/serve_config.yaml"}
    for name in copied + installed:
        assert (ROOT / name).exists() and not _ignored(name, patterns), f"the build needs {name}"


def test_the_lock_pins_everything_the_image_installs():
    """`pip install -c requirements.lock` of the runtime dependencies resolves nothing that is not pinned."""
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    )
    pins = {canonicalize_name(k): v.strip() for k, v in pins.items()}
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = [Requirement(r) for r in runtime]
    seen: set[tuple[str, frozenset[str]]] = set()
    problems = []
    while todo:
        req = todo.pop()
        name, extras = canonicalize_name(req.name), frozenset(req.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        if name not in pins:
            problems.append(f"{name} is not pinned")
            continue
        installed = metadata.version(name)
        if installed != pins[name]:
            problems.append(f"{name} {installed} installed, {pins[name]} pinned")
        for text in metadata.requires(name) or []:
            sub = Requirement(text)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in {"", *extras}):
                todo.append(sub)
    assert len(seen) > 50, "the walk should cover Ray's and torch's trees"
    assert not problems, problems


# -- compose ----------------------------------------------------------------------------------------------


def _compose_config(path: Path = COMPOSE, *profiles: str) -> subprocess.CompletedProcess[str]:
    args = [_tool("docker-compose"), "-f", str(path)]
    for profile in profiles:
        args += ["--profile", profile]
    return _run(*args, "config", "--format", "json", cwd=path.parent)


def _compose_services() -> dict[str, Any]:
    proc = _compose_config(COMPOSE, "monitoring")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["services"]


def test_compose_file_passes_docker_composes_own_validation():
    services = _compose_services()
    assert {"kafka", "redis", "ray-head", "ray-worker", "serve-app", "consumers", "prometheus", "grafana"} == set(
        services
    )
    consumer = [part.replace("$$", "$") for part in services["consumers"]["command"]]  # config keeps $$ escaped
    assert consumer[:2] == ["bash", "-c"] and consumer[2].endswith("&& exec rerank-stream worker")
    assert "ray start --address=$RERANK_SERVE_RAY_ADDRESS --num-cpus=0" in consumer[2], (
        "a driver needs a local Ray node"
    )
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, no ZooKeeper"
    assert services["serve-app"]["command"][:3] == ["serve", "deploy", "serve_config.yaml"]
    assert {d for d in services["consumers"]["depends_on"]} == {"kafka", "redis", "ray-head"}


def test_compose_validation_can_fail(tmp_path):
    shutil.copytree(COMPOSE_DIR, tmp_path / "compose")
    broken = tmp_path / "compose" / "compose.yaml"
    doc = yaml.safe_load(broken.read_text())
    doc["services"]["consumers"]["restart_policy"] = "always"
    broken.write_text(yaml.safe_dump(doc))
    proc = _compose_config(broken)
    assert proc.returncode != 0 and "restart_policy" in proc.stderr, proc.stderr


def _rerank_services() -> dict[str, dict[str, str]]:
    return {
        name: {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        for name, svc in _compose_services().items()
        if str(svc.get("image", "")).startswith("rerank-stream:")
    }


def test_every_variable_compose_and_the_image_set_is_a_setting():
    services = _rerank_services()
    assert set(services) == {"ray-head", "ray-worker", "serve-app", "consumers"}
    image_env = {
        part.split("=", 1)[0]
        for kw, args in _instructions(DOCKERFILE.read_text())
        if kw == "ENV"
        for part in args.split()
        if "=" in part
    }
    names = image_env | {name for env in services.values() for name in env}
    assert "RERANK_SERVE_HTTP_HOST" in image_env and "KAFKA_BOOTSTRAP_SERVERS" in names
    assert unknown_settings(names) == []
    for name, env in services.items():
        assert warn_unknown_env_vars(env) == [], name
        settings = load_settings(environ=env)  # every value valid, as the container will load it
        assert settings.kafka.bootstrap_servers == "kafka:9092" and settings.redis.url.startswith("redis://redis:")


def test_compose_settings_do_not_fight_the_deployed_serve_config():
    """`serve deploy serve_config.yaml` applies the file's options over the env: they must agree."""
    env = _rerank_services()["serve-app"]
    assert serve_config(load_settings(environ=env)) == yaml.safe_load(SERVE_CONFIG.read_text())


# -- the documented commands ------------------------------------------------------------------------------


def test_the_documented_job_and_request_are_valid():
    text = DEPLOY_DOC.read_text()
    [produce] = [ln for ln in text.splitlines() if "kafka-console-producer.sh" in ln]
    job = RerankJob.model_validate_json(re.search(r"echo '(.*?)' \|", produce).group(1))  # type: ignore[union-attr]
    settings = load_settings(environ=_rerank_services()["consumers"])
    topic = re.search(r"--topic (\S+)", produce).group(1)  # type: ignore[union-attr]
    assert topic == settings.kafka.feeds[job.feed].topic
    [consume] = [ln for ln in text.splitlines() if "kafka-console-consumer.sh" in ln]
    assert f"--topic {settings.kafka.results_topic} " in consume
    body = re.search(r"-d '(\{.*?\})'", text).group(1)  # type: ignore[union-attr]
    RerankRequest.model_validate_json(body)
    for path in ("deploy/docker/Dockerfile", "deploy/compose/compose.yaml", "deploy/k8s/config.yaml"):
        assert (ROOT / path).is_file() and path in text, path


@pytest.mark.parametrize(
    "command", ["make manifests", "docker compose -f deploy/compose/compose.yaml up", "kubectl apply -k deploy/k8s"]
)
def test_deploy_doc_walks_through_each_step(command):
    assert command in DEPLOY_DOC.read_text()
