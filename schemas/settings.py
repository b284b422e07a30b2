"""Runtime configuration shared by every process, validated by pydantic.

Sources, later wins: field defaults < YAML file named by ``RERANK_CONFIG`` < environment.
Every field has exactly one environment variable (``RERANK_<SECTION>_<FIELD>`` unless the
field names another, e.g. ``KAFKA_BOOTSTRAP_SERVERS``), and the README's configuration table
is generated from these definitions (``rerank-stream config --markdown``), so the docs cannot
drift from the code.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_FILE_ENV = "RERANK_CONFIG"


def _env(name: str) -> dict[str, str]:
    return {"env": name}


class Section(BaseModel):
    """Base for one configuration section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedSettings(Section):
    """One input feed: its topic and the instruction used when a job brings none."""

    topic: str
    instruction: str


DEFAULT_FEEDS: dict[str, FeedSettings] = {
    "recommendation": FeedSettings(
        topic="rerank.jobs.recommendation",
        instruction="Given a user's interest, retrieve items the user is most likely to engage with",
    ),
    "moderation": FeedSettings(
        topic="rerank.jobs.moderation",
        instruction=(
            "Given a content policy, judge whether the text violates the policy and must be "
            "flagged for review"
        ),
    ),
}


class KafkaSettings(Section):
    bootstrap_servers: str = Field(
        "127.0.0.1:19092",
        description="Kafka bootstrap servers (host:port, comma separated). When set, no local broker is started.",
        json_schema_extra=_env("KAFKA_BOOTSTRAP_SERVERS"),
    )
    group_id: str = Field("rerank-workers", description="Consumer group of the workers.")
    feeds: dict[str, FeedSettings] = Field(
        default_factory=lambda: dict(DEFAULT_FEEDS),
        description="Feeds as JSON: name -> {topic, instruction}. One input topic per feed.",
    )
    results_topic: str = Field("rerank.results", description="Output topic of ranked results, keyed by job_id.")
    dlq_topic: str = Field("rerank.dlq", description="Dead-letter topic for input that cannot be ranked.")
    auto_create_topics: bool = Field(
        False,
        description="Create missing topics at start-up (local/test mode). Otherwise missing topics are a start-up error.",
    )
    topic_partitions: int = Field(4, ge=1, description="Partitions of topics created in local mode.")
    exactly_once: bool = Field(
        False,
        description="Transactional mode: results and offsets commit atomically (consumers must read_committed).",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: str | None = Field(None, description="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: str | None = Field(None, description="SASL password.")
    ssl_cafile: str | None = Field(None, description="CA bundle for TLS to the brokers.")

    def client_options(self) -> dict[str, Any]:
        """Connection options common to kafka-python consumers, producers and admin clients."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.ssl_cafile:
            opts["ssl_cafile"] = self.ssl_cafile
        return opts

    @property
    def input_topics(self) -> list[str]:
        return [feed.topic for feed in self.feeds.values()]

    def feed_for_topic(self, topic: str) -> str | None:
        for name, feed in self.feeds.items():
            if feed.topic == topic:
                return name
        return None


class RedisSettings(Section):
    url: str = Field(
        "redis://127.0.0.1:16379/0",
        description="Redis URL of the score cache (rediss:// for TLS, user:password@ for AUTH). When set, no local Redis is started.",
        json_schema_extra=_env("REDIS_URL"),
    )
    key_prefix: str = Field("rr:v1:", description="Prefix of every cache key.")
    ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Time to live of a cached score, seconds.")
    timeout_s: float = Field(0.5, gt=0, description="Socket timeout of cache calls; a slow cache is bypassed, not waited for.")
    enabled: bool = Field(True, description="Use the score cache at all.")


class ModelSettings(Section):
    model: str = Field(
        "auto",
        description=(
            "Model to serve: a hub id or a local directory. 'auto' uses Qwen/Qwen3-Reranker-0.6B when "
            "its weights are in the local cache, else the packaged all-MiniLM-L6-v2 fallback (announced)."
        ),
        json_schema_extra=_env("RERANK_MODEL"),
    )
    revision: str | None = Field(None, description="Hub revision (commit, tag or branch) to pin.")
    kind: Literal["auto", "qwen3-reranker", "seq-cls", "bi-encoder"] = Field(
        "auto", description="Model kind; 'auto' detects it from the model's config."
    )
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:N.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weights dtype; auto = bfloat16 on CUDA, float32 on CPU."
    )
    max_length: int = Field(8192, ge=16, description="Max tokens per (query, document) pair; capped at the model's maximum.")
    max_batch_tokens: int = Field(16384, ge=256, description="Token budget of one forward micro-batch (padded tokens).")
    allowed_models: list[str] = Field(
        default_factory=list,
        description="Extra model names a job may ask for (comma separated); the served model is always allowed.",
    )

    def allowed_names(self, served_id: str | None = None) -> set[str]:
        """Model names a job or HTTP request may ask for: the configured, the served and the extra ones."""
        return set(self.allowed_models) | {self.model} | ({served_id} if served_id else set())


class ServeSettings(Section):
    app_name: str = Field("rerank", description="Ray Serve application name.")
    deployment_name: str = Field("Reranker", description="Name of the reranker deployment.")
    http_host: str = Field("127.0.0.1", description="Serve HTTP host.")
    http_port: int = Field(8000, ge=1, le=65535, description="Serve HTTP port.")
    route_prefix: str = Field("/", description="HTTP route prefix of the app.")
    ray_address: str | None = Field(None, description="Address of an existing Ray cluster; unset starts a local one.")
    include_dashboard: bool = Field(False, description="Start the Ray dashboard (costs ~900 MB RSS).")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica.")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per replica; unset = 1 when CUDA is present, else 0. Fractions share a GPU.")
    min_replicas: int = Field(1, ge=0, description="Autoscaling lower bound.")
    max_replicas: int = Field(2, ge=1, description="Autoscaling upper bound.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at start (default: min_replicas).")
    target_ongoing_requests: float = Field(2.0, gt=0, description="Autoscaling target of ongoing requests per replica.")
    upscale_delay_s: float = Field(10.0, ge=0, description="Sustained demand needed before adding replicas, seconds.")
    downscale_delay_s: float = Field(60.0, ge=0, description="Sustained idleness needed before removing replicas, seconds.")
    metrics_interval_s: float = Field(2.0, gt=0, description="How often replicas report queue depth, seconds.")
    look_back_period_s: float = Field(10.0, gt=0, description="Window over which queue depth is averaged, seconds.")
    lag_per_replica: int = Field(
        200, ge=1, description="Kafka backlog (jobs) one replica is expected to absorb; more backlog asks for more replicas."
    )
    scale_on_kafka_lag: bool = Field(
        True, description="Also scale on the workers' Kafka consumer lag (off: queue depth only, e.g. HTTP-only use)."
    )
    lag_poll_interval_s: float = Field(2.0, gt=0, description="How often the autoscaling policy reads consumer lag, seconds.")
    max_batch_size: int = Field(8, ge=1, description="Jobs merged into one @serve.batch call.")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="How long a batch waits to fill, seconds.")
    max_ongoing_requests: int | None = Field(
        None,
        ge=1,
        description=(
            "Requests in a replica at once; default 2 * max_batch_size (one batch computing, one filling). "
            "A replica runs one batch at a time: the engine owns the device."
        ),
    )
    max_queued_requests: int = Field(256, ge=-1, description="Per-caller queue cap; beyond it HTTP answers 503 (-1 = unbounded).")
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per replica; unset = the replica's num_cpus (at least 1)."
    )
    request_timeout_s: float = Field(60.0, gt=0, description="HTTP API: longest wait for scores before answering 504.")

    @property
    def ongoing_requests(self) -> int:
        """Effective max_ongoing_requests (keeps batches full: >= max_batch_size)."""
        return self.max_ongoing_requests or 2 * self.max_batch_size


class LimitsSettings(Section):
    max_documents: int = Field(500, ge=1, description="Documents (candidates) per request or job.")
    max_document_chars: int = Field(20000, ge=1, description="Characters per document.")
    max_query_chars: int = Field(4000, ge=1, description="Characters of a query or instruction.")
    max_total_tokens: int = Field(400_000, ge=1, description="Estimated tokens per request (sum over pairs).")
    max_message_bytes: int = Field(4_000_000, ge=1, description="Size of one Kafka job message.")


class WorkerSettings(Section):
    worker_id: str | None = Field(None, description="Worker identity in results and metrics; default host:pid.")
    max_in_flight: int = Field(16, ge=1, description="Jobs scored concurrently per worker; partitions pause beyond it.")
    chunk_documents: int = Field(128, ge=1, description="Documents per Serve call; larger jobs are split.")
    scoring_retries: int = Field(3, ge=0, description="Retries of a failed scoring call before the job is dead-lettered.")
    retry_backoff_s: float = Field(0.5, ge=0, description="First retry delay, doubled each retry.")
    scoring_timeout_s: float = Field(120.0, gt=0, description="Timeout of one Serve scoring call, seconds.")
    commit_interval_s: float = Field(0.5, gt=0, description="How often finished offsets are committed, seconds.")
    poll_max_records: int = Field(256, ge=1, description="Max records per consumer poll.")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Port of the worker's Prometheus endpoint; unset = off.")
    log_interval_s: float = Field(30.0, gt=0, description="Minimum seconds between repeated warnings (e.g. cache down).")


class Settings(BaseModel):
    """All configuration of rerank-stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    model: ModelSettings = ModelSettings()
    serve: ServeSettings = ServeSettings()
    limits: LimitsSettings = LimitsSettings()
    worker: WorkerSettings = WorkerSettings()

    @field_validator("serve")
    @classmethod
    def _replica_bounds(cls, v: ServeSettings) -> ServeSettings:
        if v.min_replicas > v.max_replicas:
            raise ValueError(f"serve.min_replicas ({v.min_replicas}) > serve.max_replicas ({v.max_replicas})")
        if v.max_ongoing_requests is not None and v.max_ongoing_requests < v.max_batch_size:
            raise ValueError(
                f"serve.max_ongoing_requests ({v.max_ongoing_requests}) < serve.max_batch_size ({v.max_batch_size}): "
                "batches could never fill"
            )
        if v.look_back_period_s <= v.metrics_interval_s:
            raise ValueError("serve.look_back_period_s must exceed serve.metrics_interval_s")
        return v


class ConfigError(ValueError):
    """Configuration could not be loaded; the message names the offending setting."""


def env_var(section: str, field: str) -> str:
    """The one environment variable that sets ``section.field``."""
    info = Settings.model_fields[section].annotation.model_fields[field]  # type: ignore[union-attr]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return str(extra.get("env") or f"RERANK_{section}_{field}".upper())


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list


def _parse_env_value(raw: str, annotation: Any) -> Any:
    text = raw.strip()
    if text[:1] in "[{":
        return json.loads(text)
    if _is_list(annotation):
        return [part.strip() for part in text.split(",") if part.strip()]
    if text == "" and type(None) in typing.get_args(annotation):
        return None
    return text


def load_settings(config_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate settings from defaults, an optional YAML file and the environment."""
    environ = os.environ if environ is None else environ
    path = config_file or environ.get(CONFIG_FILE_ENV)
    data: dict[str, dict[str, Any]] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path} ({CONFIG_FILE_ENV}): {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of sections")
        data = {k: dict(v or {}) for k, v in loaded.items()}
    for section, section_field in Settings.model_fields.items():
        model = section_field.annotation
        for name, info in model.model_fields.items():  # type: ignore[union-attr]
            var = env_var(section, name)
            if var in environ:
                try:
                    data.setdefault(section, {})[name] = _parse_env_value(environ[var], info.annotation)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{var}: invalid JSON ({exc})") from exc
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            where = ".".join(loc)
            if len(loc) >= 2 and loc[0] in Settings.model_fields:
                try:
                    where += f" ({env_var(loc[0], loc[1])})"
                except KeyError:
                    pass
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from exc


def settings_markdown() -> str:
    """The configuration table of the README, generated from the field definitions."""
    rows = ["| Environment variable | Key in config file | Default | Meaning |", "|---|---|---|---|"]
    defaults = Settings()
    for section, section_field in Settings.model_fields.items():
        model = section_field.annotation
        for name, info in model.model_fields.items():  # type: ignore[union-attr]
            value = getattr(getattr(defaults, section), name)
            if isinstance(value, BaseModel):
                value = value.model_dump()
            elif isinstance(value, dict):
                value = {k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in value.items()}
            shown = "" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            desc = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{env_var(section, name)}` | `{section}.{name}` | `{shown}` | {desc} |")
    return "\n".join(rows) + "\n"
