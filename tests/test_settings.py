"""Configuration: sources, precedence, validation messages, and docs that match the code."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from schemas import readme_table
from schemas import settings as settings_mod
from schemas.settings import (
    OTHER_ENV_VARS,
    ConfigError,
    Settings,
    env_var,
    known_env_vars,
    load_settings,
    settings_markdown,
)
from workers import cli

REPO = Path(__file__).resolve().parent.parent
ALL_FIELDS = [(section, name) for section, f in Settings.model_fields.items() for name in f.annotation.model_fields]


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which unknown variables were already warned about, so each test sees its own warnings."""
    monkeypatch.setattr(settings_mod, "_warned_env_vars", set())


def _problems(environ=None, config_file=None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_settings(config_file, environ=environ or {})
    return err.value.problems


def test_defaults_validate():
    s = load_settings(environ={})
    assert s == Settings()
    assert s.kafka.input_topics == ["rerank.jobs.recommendation", "rerank.jobs.moderation"]


def test_env_overrides_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis:\n  ttl_s: 60\n  key_prefix: 'from-file:'\nserve:\n  max_replicas: 4\n")
    s = load_settings(
        environ={"RERANK_CONFIG": str(cfg), "RERANK_REDIS_TTL_S": "30", "KAFKA_BOOTSTRAP_SERVERS": "h1:9092,h2:9092"}
    )
    assert s.redis.ttl_s == 30  # env wins
    assert s.redis.key_prefix == "from-file:"  # file over default
    assert s.serve.max_replicas == 4
    assert s.kafka.client_options()["bootstrap_servers"] == ["h1:9092", "h2:9092"]


def test_list_and_json_values():
    s = load_settings(
        environ={
            "RERANK_MODEL_ALLOWED_MODELS": "a, b",
            "RERANK_KAFKA_FEEDS": '{"news": {"topic": "jobs.news", "instruction": "Rank news"}}',
        }
    )
    assert s.model.allowed_models == ["a", "b"]
    assert s.kafka.feed_for_topic("jobs.news") == "news"
    assert load_settings(environ={"RERANK_MODEL_ALLOWED_MODELS": '["x", "y,z"]'}).model.allowed_models == ["x", "y,z"]


def test_text_fields_take_braces_literally():
    """Only JSON-typed fields parse JSON: a key prefix like ``{tenant}:`` is text, not broken JSON."""
    assert load_settings(environ={"RERANK_REDIS_KEY_PREFIX": "{tenant}:"}).redis.key_prefix == "{tenant}:"


@pytest.mark.parametrize(("section", "name"), ALL_FIELDS)
@pytest.mark.parametrize("empty", ["", "   "])
def test_empty_env_value_means_default(section, name, empty):
    assert load_settings(environ={env_var(section, name): empty}) == Settings()


def test_empty_env_value_keeps_the_file_value(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("serve:\n  num_gpus: 0.5\n")
    assert load_settings(environ={"RERANK_CONFIG": str(cfg), "RERANK_SERVE_NUM_GPUS": ""}).serve.num_gpus == 0.5


def _env_text(value) -> str:
    if isinstance(value, dict):
        return json.dumps({k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in value.items()})
    if isinstance(value, list):
        return ",".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.parametrize(
    ("section", "name"), [(s, n) for s, n in ALL_FIELDS if getattr(getattr(Settings(), s), n) is not None]
)
def test_every_default_round_trips_through_its_env_var(section, name):
    """What the docs table shows as the default is also a value the variable accepts."""
    value = getattr(getattr(Settings(), section), name)
    assert load_settings(environ={env_var(section, name): _env_text(value)}) == Settings()


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"RERANK_REDIS_TTL_S": "soon"}, "redis.ttl_s (RERANK_REDIS_TTL_S) = 'soon': "),
        (
            {"RERANK_SERVE_MIN_REPLICAS": "3", "RERANK_SERVE_MAX_REPLICAS": "2"},
            "serve.min_replicas (RERANK_SERVE_MIN_REPLICAS) = 3 exceeds serve.max_replicas",
        ),
        ({"RERANK_KAFKA_FEEDS": "{not json"}, "kafka.feeds (RERANK_KAFKA_FEEDS) = '{not json': invalid JSON"),
        ({"RERANK_KAFKA_FEEDS": '{"a": {"topic": "t"}}'}, "kafka.feeds.a.instruction (RERANK_KAFKA_FEEDS): "),
        ({"RERANK_KAFKA_SECURITY_PROTOCOL": "TLS"}, "kafka.security_protocol (RERANK_KAFKA_SECURITY_PROTOCOL) = 'TLS'"),
        ({"RERANK_SERVE_TARGET_ONGOING_REQUESTS": "nan"}, "serve.target_ongoing_requests"),
        ({"RERANK_SERVE_HTTP_PORT": "70000"}, "serve.http_port (RERANK_SERVE_HTTP_PORT) = '70000'"),
    ],
)
def test_bad_values_name_the_setting(environ, needle):
    problems = _problems(environ)
    assert len(problems) == 1 and needle in problems[0], problems


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:16379/0",
        "redis://localhost",
        "redis://cache.internal:6379",
        "rediss://user:pa:ss@cache.example.com:6380/3",
        "redis://:password@h/0",
        "redis://[::1]:6379/1",
        "redis://h:6379?db=2",
        "unix:///run/redis.sock",
        "unix:///run/redis.sock?db=1",
    ],
)
def test_good_redis_urls(url):
    assert load_settings(environ={"REDIS_URL": url}).redis.url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("nonsense", "must be a redis://, rediss:// or unix:// URL"),
        ("http://h:6379/0", "must be a redis://"),
        ("redis://", "needs a host"),
        ("redis://h:0/0", "not a number 1-65535"),
        ("redis://h:70000/0", "not a number 1-65535"),
        ("redis://h:port/0", "not a number 1-65535"),
        ("redis://h:6379/zero", "database 'zero' is not a number"),
        ("redis://h:6379?db=x", "database 'x' is not a number"),
        ("redis://bad host:1", "not a host name"),
        ("redis://[::1/0", "not a URL"),
        ("unix://", "needs the socket path"),
    ],
)
def test_bad_redis_urls(url, why):
    (problem,) = _problems({"REDIS_URL": url})
    assert problem.startswith("redis.url (REDIS_URL) = ") and why in problem, problem


def test_redis_password_is_masked_in_errors():
    (problem,) = _problems({"REDIS_URL": "redis://user:s3cret@h:99999/0"})
    assert "s3cret" not in problem and "user:***@h" in problem


def test_sasl_password_is_masked_in_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka:\n  sasl_password: [s3cret]\n")
    (problem,) = _problems(config_file=cfg)
    assert "s3cret" not in problem and "kafka.sasl_password (RERANK_KAFKA_SASL_PASSWORD) = '***'" in problem


@pytest.mark.parametrize(
    ("given", "device"),
    [("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"), (" MPS ", "mps"), ("CUDA:0", "cuda:0")],
)
def test_good_devices(given, device):
    assert load_settings(environ={"RERANK_MODEL_DEVICE": given}).model.device == device


@pytest.mark.parametrize("device", ["tpu", "cuda:", "cuda:x", "gpu", "cuda0", "cpu,cuda"])
def test_bad_devices(device):
    (problem,) = _problems({"RERANK_MODEL_DEVICE": device})
    assert problem.startswith(f"model.device (RERANK_MODEL_DEVICE) = {device!r}: must be one of"), problem


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("h1:9092", "h1:9092"),
        (" h1:9092 , h2:9093, ", "h1:9092,h2:9093"),
        ("[::1]:9092", "[::1]:9092"),
        ("10.0.0.1:19092,kafka-0.kafka.svc:9092", "10.0.0.1:19092,kafka-0.kafka.svc:9092"),
    ],
)
def test_good_bootstrap_servers(given, normalized):
    assert load_settings(environ={"KAFKA_BOOTSTRAP_SERVERS": given}).kafka.bootstrap_servers == normalized


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("kafka", "is not host:port"),
        ("h:0", "not a number 1-65535"),
        ("h:65536", "not a number 1-65535"),
        ("h1:9092,h2", "'h2' is not host:port"),
        ("::1:9092", "IPv6 hosts go in brackets"),
        (",", "at least one"),
        ("PLAINTEXT://h:9092", "no scheme"),
        ("a:b:9092", "'a:b:9092' is not host:port"),
        ("h:9092x", "not a number 1-65535"),
    ],
)
def test_bad_bootstrap_servers(given, why):
    (problem,) = _problems({"KAFKA_BOOTSTRAP_SERVERS": given})
    assert problem.startswith("kafka.bootstrap_servers (KAFKA_BOOTSTRAP_SERVERS) = ") and why in problem, problem


def test_every_problem_is_reported_at_once_one_line_each():
    problems = _problems(
        {"REDIS_URL": "nonsense", "RERANK_MODEL_DEVICE": "tpu", "RERANK_REDIS_TTL_S": "a\nb", "RERANK_KAFKA_FEEDS": "["}
    )
    assert len(problems) == 4
    assert all("\n" not in p for p in problems)
    assert any("'a\\nb'" in p for p in problems)  # the newline is shown escaped, not printed


def test_config_error_pickles_with_its_problems():
    err = ConfigError(["a: bad", "b: worse"])
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == ["a: bad", "b: worse"] and str(again) == "a: bad\nb: worse"


def test_unknown_key_in_file_is_an_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis:\n  ttl: 60\n")
    (problem,) = _problems({"RERANK_CONFIG": str(cfg)})
    assert problem == f"redis.ttl: unknown key in config file {cfg} (did you mean redis.ttl_s?)"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("redis: [\n", "invalid YAML at line 2, column 1"),
        ("redis:\n  ttl_s: 1\n bad: 2\n", "invalid YAML at line 3"),
        ("- kafka\n", "must be a mapping of sections (kafka, redis, model, serve, limits, worker, tracing), not list"),
        ("just text\n", "not str"),
        ("serv:\n  max_replicas: 2\n", "unknown section serv (did you mean serve?)"),
        ("1: {}\n", "unknown section 1;"),
        ("kafka: 3\n", "section kafka must be a mapping of keys, not int"),
    ],
)
def test_config_file_errors_name_the_file(tmp_path, text, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    (problem,) = _problems(config_file=cfg)
    assert problem.startswith(f"config file {cfg}") and needle in problem, problem


def test_config_file_values_name_the_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("redis:\n  ttl_s: soon\n")
    assert _problems(config_file=cfg) == [
        f"redis.ttl_s (RERANK_REDIS_TTL_S) = 'soon' in {cfg}: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


def test_unreadable_config_files(tmp_path):
    (problem,) = _problems({"RERANK_CONFIG": str(tmp_path / "missing.yaml")})
    assert (
        problem == f"config file {tmp_path / 'missing.yaml'} (RERANK_CONFIG): cannot be read: No such file or directory"
    )
    (problem,) = _problems(config_file=tmp_path)
    assert problem.startswith(f"config file {tmp_path}: cannot be read")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"redis:\n  key_prefix: \xe9\n")
    assert _problems(config_file=latin) == [f"config file {latin}: is not UTF-8 text"]


def test_empty_config_file_and_sections_are_fine(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("# nothing yet\nredis:\n")
    assert load_settings(environ={"RERANK_CONFIG": str(cfg)}) == Settings()


def test_unknown_env_vars_are_warned_once_with_a_suggestion(fresh_warnings, caplog):
    environ = {
        "RERANK_SERVE_NUM_GPU": "1",
        "RERANK_REDIS_URL": "redis://h",
        "RERANK_NOT_A_THING": "x",
        **{var: "x" for var in OTHER_ENV_VARS - {"RERANK_CONFIG"}},
    }
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        load_settings(environ=environ)
        load_settings(environ=environ)  # again: no repeat
    assert [r.getMessage() for r in caplog.records] == [
        "unknown environment variable RERANK_NOT_A_THING is ignored (not a rerank-stream setting)",
        "unknown environment variable RERANK_REDIS_URL is ignored (did you mean REDIS_URL?)",
        "unknown environment variable RERANK_SERVE_NUM_GPU is ignored (did you mean RERANK_SERVE_NUM_GPUS?)",
    ]


def test_known_env_vars_are_never_warned(fresh_warnings, caplog):
    with caplog.at_level(logging.WARNING, logger="schemas.settings"):
        load_settings(environ={var: "" for var in known_env_vars()})
    assert caplog.records == []


def test_rerank_vars_used_anywhere_in_the_repo_are_known():
    """Scripts, Makefile, tests and load tests read RERANK_* variables too: those must not be warned as typos."""
    used: set[str] = set()
    skip_dirs = {".venv", ".git", ".run", ".hypothesis", "node_modules", "__pycache__", "rerank_stream.egg-info"}
    code = {".py", ".sh", ".yaml", ".yml", ".toml", ".cfg", ".env", ""}  # what reads variables; docs only mention them
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if (
            skip_dirs & set(rel.parts)
            or not path.is_file()
            or path.name.startswith("test_settings")  # these spell typos on purpose
            or path.suffix not in code
            or path.stat().st_size > 2_000_000
        ):
            continue
        used |= set(re.findall(r"\bRERANK_[A-Z0-9_]*[A-Z0-9]", path.read_text(errors="replace")))
    assert used, "the scan found nothing: is REPO right?"
    assert used - known_env_vars() == set()


def test_env_names():
    assert env_var("kafka", "bootstrap_servers") == "KAFKA_BOOTSTRAP_SERVERS"
    assert env_var("redis", "url") == "REDIS_URL"
    assert env_var("model", "model") == "RERANK_MODEL"
    assert env_var("serve", "max_batch_size") == "RERANK_SERVE_MAX_BATCH_SIZE"


def test_every_option_is_documented_once():
    table = settings_markdown()
    rows = table.splitlines()[2:]
    assert len(rows) == len(ALL_FIELDS)
    for section, name in ALL_FIELDS:
        assert sum(f"| `{env_var(section, name)}` | `{section}.{name}` |" in row for row in rows) == 1
    readme = readme_table.README.read_text()
    for var in known_env_vars() - OTHER_ENV_VARS:
        assert readme.count(f"| `{var}` |") == 1, var


def test_readme_configuration_table_is_current():
    text = readme_table.README.read_text()
    assert readme_table.render(text) == text, "README config table is stale: run `python -m schemas.readme_table`"


def test_cli_config_error_exits_2_in_process(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", "nonsense")
    monkeypatch.setenv("RERANK_SERVE_NUM_GPUS", "")
    assert cli.main(["config"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "rerank-stream config: configuration error: redis.url (REDIS_URL) = 'nonsense': "
        "must be a redis://, rediss:// or unix:// URL, e.g. redis://host:6379/0"
    ]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANK_", "REDIS_", "KAFKA_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@pytest.mark.parametrize("command", ["serve", "worker", "demo", "config"])
def test_every_subcommand_reports_config_errors_without_traceback(command):
    """Bad configuration stops every process kind before it starts anything (no Kafka/Redis/Ray needed)."""
    env = _clean_env(REDIS_URL="nonsense", RERANK_MODEL_DEVICE="tpu", RERANK_SERVE_NUM_GPUS="")
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli", command], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "configuration error" in line]
    assert len(lines) == 2 and "REDIS_URL" in lines[0] and "RERANK_MODEL_DEVICE" in lines[1], proc.stderr
