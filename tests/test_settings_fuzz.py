"""Property tests of configuration loading: whatever an operator puts in the environment or a config file,
the outcome is a valid Settings or a ConfigError whose lines name the setting or file - never a crash."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.settings import ConfigError, Settings, env_var, load_settings

REPO = Path(__file__).resolve().parent.parent
FIELDS = {env_var(s, n): f"{s}.{n}" for s, f in Settings.model_fields.items() for n in f.annotation.model_fields}
SECTIONS = list(Settings.model_fields)
KEYS = sorted({key.split(".", 1)[1] for key in FIELDS.values()})
# Bounded and reproducible: 200 examples, no example database written into the work tree.
PROPERTY = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
# Paths must stay inside our temporary directory, so RERANK_CONFIG gets its own tests.
ENV_VARS = sorted(FIELDS)

TRICKY = [
    "",
    " ",
    "\t",
    "0",
    "-1",
    "1e309",
    "nan",
    "inf",
    "-0.0",
    "true",
    "no",
    "null",
    "None",
    "[",
    "]",
    "{",
    "}",
    "[]",
    "{}",
    '{"a": 1}',
    '{"a": {"topic": "t", "instruction": "i"}}',
    '["a", 1]',
    "[[[[[[",
    "9" * 5000,
    "0x10",
    "a,b,,c",
    "redis://",
    "redis://h:1/2",
    "unix://",
    "h:9092",
    "[::1]:9092",
    "cuda:0",
    "cuda:99999",
    "é",
    "\u2028",
    "\x00",
]

env_values = st.one_of(
    st.sampled_from(TRICKY),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.integers().map(str),
    st.floats().map(str),
    st.from_regex(r"\A[\[{][\[\]{}\",:a-z0-9 ]{0,30}\Z"),
)

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(TRICKY[:20]),
    st.dates(),
    st.binary(max_size=8),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)
yaml_keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=12), st.integers(), st.none(), st.booleans())
yaml_sections = st.one_of(st.none(), yaml_scalars, st.dictionaries(yaml_keys, yaml_values, max_size=5))
yaml_docs = st.one_of(
    st.dictionaries(
        st.one_of(st.sampled_from(SECTIONS), st.text(max_size=10), st.integers()), yaml_sections, max_size=4
    ),
    yaml_values,
)

_TMP = Path(tempfile.mkdtemp(prefix="rerank-settings-fuzz-"))


def _check(load) -> None:
    """The property itself: Settings, or ConfigError lines that each name a setting or the config file."""
    try:
        result = load()
    except ConfigError as exc:
        assert exc.problems, "a ConfigError must say what is wrong"
        for line in exc.problems:
            assert "\n" not in line and "\r" not in line, line
            named = line.startswith("config file ") or re.match(rf"({'|'.join(SECTIONS)})\.\S", line)
            assert named, f"problem names no setting: {line!r}"
    else:
        assert isinstance(result, Settings)


@PROPERTY
@given(st.dictionaries(st.sampled_from(ENV_VARS), env_values, max_size=6))
def test_any_environment_gives_settings_or_a_config_error(environ):
    _check(lambda: load_settings(environ=environ))


@PROPERTY
@given(st.sampled_from(ENV_VARS), env_values)
def test_a_bad_env_value_is_reported_under_its_own_name(var, value):
    try:
        load_settings(environ={var: value})
    except ConfigError as exc:
        key = FIELDS[var]
        # a lone bad value is blamed on itself (cross-field checks name it next to its partner)
        assert all(key in line and var in line for line in exc.problems), (var, exc.problems)


@PROPERTY
@given(st.dictionaries(st.from_regex(r"\ARERANK_[A-Z_]{0,24}\Z"), st.text(max_size=5), max_size=4))
def test_unknown_rerank_variables_never_fail(environ):
    _check(
        lambda: load_settings(environ={k: v for k, v in environ.items() if k not in FIELDS and k != "RERANK_CONFIG"})
    )


@PROPERTY
@given(yaml_docs)
def test_any_yaml_mapping_gives_settings_or_a_config_error(doc):
    path = _TMP / "mapping.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    _check(lambda: load_settings(path, environ={}))


@PROPERTY
@given(st.one_of(st.text(max_size=120), st.binary(max_size=120).map(lambda b: b.decode("latin-1"))))
def test_any_config_file_text_gives_settings_or_a_config_error(text):
    path = _TMP / "text.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _check(lambda: load_settings(environ={"RERANK_CONFIG": str(path)}))


@PROPERTY
@given(yaml_docs, st.dictionaries(st.sampled_from(ENV_VARS), env_values, max_size=3))
def test_file_and_environment_together(doc, environ):
    path = _TMP / "both.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    _check(lambda: load_settings(environ={**environ, "RERANK_CONFIG": str(path)}))


def _cli_commands() -> list[list[str]]:
    commands = [[sys.executable, "-m", "workers.cli"]]
    script = Path(sys.executable).parent / "rerank-stream"
    if script.exists():
        commands.append([str(script)])
    return commands


@pytest.mark.parametrize("command", _cli_commands(), ids=lambda c: Path(c[-1]).name)
def test_config_command_with_bad_env_exits_2_one_line_per_problem(command):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANK_", "REDIS_", "KAFKA_"))}
    env.update(
        REDIS_URL="nonsense",
        RERANK_MODEL_DEVICE="tpu",
        RERANK_REDIS_TTL_S="soon\nlater",
        KAFKA_BOOTSTRAP_SERVERS="kafka",
        RERANK_SERVE_NUM_GPUS="",  # empty: the default, not a problem
        RERANK_SERVE_NUM_GPU="1",  # a typo: warned, not an error
    )
    proc = subprocess.run([*command, "config"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    errors = [
        line for line in proc.stderr.splitlines() if line.startswith("rerank-stream config: configuration error: ")
    ]
    assert [e.split(": ", 2)[2].split(" ", 2)[:2] for e in errors] == [
        ["kafka.bootstrap_servers", "(KAFKA_BOOTSTRAP_SERVERS)"],
        ["redis.url", "(REDIS_URL)"],
        ["redis.ttl_s", "(RERANK_REDIS_TTL_S)"],
        ["model.device", "(RERANK_MODEL_DEVICE)"],
    ]
    others = [line for line in proc.stderr.splitlines() if line not in errors]
    assert others == [
        "unknown environment variable RERANK_SERVE_NUM_GPU is ignored (did you mean RERANK_SERVE_NUM_GPUS?)"
    ]
