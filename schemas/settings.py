"""Runtime configuration shared by every process, validated by pydantic.

Sources, later wins: field defaults < YAML file named by ``RERANK_CONFIG`` < environment.
Every field has exactly one environment variable (``RERANK_<SECTION>_<FIELD>`` unless the
field names another, e.g. ``KAFKA_BOOTSTRAP_SERVERS``), and the README's configuration table
is generated from these definitions (``rerank-stream config --markdown``), so the docs cannot
drift from the code. An empty variable means the default. Problems are collected into one
``ConfigError`` (one line each, naming key, variable, value and source) that the CLI prints
without a traceback; addresses and devices are checked here, without importing their clients.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import os
import re
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

log = logging.getLogger(__name__)

CONFIG_FILE_ENV = "RERANK_CONFIG"
DEFAULT_MODEL = "default"
"""Key (and a name) of the model of the model.* settings; extra models are keyed by their names."""
# RERANK_* variables that are not settings but are read elsewhere (deploy/local scripts), so never typos.
OTHER_ENV_VARS = frozenset({CONFIG_FILE_ENV, "RERANK_LOCAL_DIR", "RERANK_CACHE_DIR"})
_ENV_PREFIX = "RERANK_"


def _env(name: str) -> dict[str, Any]:
    return {"env": name}


_DNS_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9_])?")
_PORT = re.compile(r"[0-9]{1,5}")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(?::[0-9]{1,3})?")


def _valid_host(host: str) -> bool:
    """A DNS name or an IP address; anything else would only fail later, inside a client library."""
    if _DNS_NAME.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split_host_port(hostport: str) -> tuple[str, str | None]:
    """``host:port`` or ``[v6]:port`` -> (host, port text or None); raises ValueError naming what is wrong."""
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{hostport!r} is not host:port (IPv6 hosts go in brackets: [::1]:9092)")
        port = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        return host, port
    host, colon, port = hostport.rpartition(":")
    if not colon:
        return hostport, None
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{hostport!r} is not host:port") from None
        raise ValueError(f"{hostport!r}: IPv6 hosts go in brackets ([::1]:9092)")
    if not _valid_host(host):
        raise ValueError(f"{host!r} is not a host name or IP address")
    return host, port


def _check_port(port: str, where: str) -> None:
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} of {where!r} is not a number 1-65535")


def check_bootstrap_servers(value: str) -> str:
    """Comma list of host:port, normalized (blanks dropped) so kafka clients get clean entries."""
    entries = [part.strip() for part in value.split(",") if part.strip()]
    if not entries:
        raise ValueError("needs at least one host:port")
    for entry in entries:
        if "://" in entry:
            raise ValueError(
                f"{entry!r} is not host:port (no scheme: RERANK_KAFKA_SECURITY_PROTOCOL sets the protocol)"
            )
        host, port = _split_host_port(entry)
        if port is None:
            raise ValueError(f"{entry!r} is not host:port (the port is required)")
        _check_port(port, entry)
    return ",".join(entries)


def check_redis_url(value: str) -> str:
    """redis://, rediss:// or unix:// URL with a parseable host, port and database, checked without redis-py."""
    url = value.strip()
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL, e.g. redis://host:6379/0")
    try:
        query = parse_qs(parts.query, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"query {parts.query!r} is not name=value pairs") from None
    dbs = query.get("db", [])
    if scheme == "unix":
        if not parts.path or parts.path == "/":
            raise ValueError("unix:// URL needs the socket path, e.g. unix:///run/redis.sock?db=0")
    else:
        hostport = parts.netloc.rpartition("@")[2]
        if not hostport:
            raise ValueError(f"{scheme}:// URL needs a host, e.g. {scheme}://host:6379/0")
        host, port = _split_host_port(hostport)
        if not host or not _valid_host(host):
            raise ValueError(f"{host!r} is not a host name or IP address")
        if port is not None:
            _check_port(port, hostport)
        if parts.path not in ("", "/"):
            dbs = [parts.path[1:], *dbs]
    for db in dbs:
        if not re.fullmatch(r"[0-9]{1,5}", db):
            raise ValueError(f"database {db!r} is not a number (redis://host:port/N)")
    return url


def check_device(value: str) -> str:
    """The device names torch accepts here; checked without importing torch."""
    device = value.strip().lower()
    if not _DEVICE.fullmatch(device):
        raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
    return device


class Section(BaseModel):
    """Base for one configuration section: unknown keys are errors, not silently ignored; NaN/inf are typos."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FeedSettings(Section):
    """One input feed: its topic, and the instruction and long-document mode used when a job brings none."""

    topic: str
    instruction: str
    # Moderation wants "chunk": a violation near the end of a long text must not score as clean.
    long_documents: Literal["truncate", "chunk"] = "truncate"
    # The model of jobs that name none (a name of model.* or model.extra_models); None = the default model.
    model: str | None = None
    # Higher is scored first when the replicas are saturated (the built-in moderation feed: 1).
    priority: int = 0
    # Jobs of this feed scored at once per worker (its own budget; None = worker.max_in_flight).
    max_in_flight: int | None = Field(None, ge=1)


DEFAULT_FEEDS: dict[str, FeedSettings] = {
    "recommendation": FeedSettings(
        topic="rerank.jobs.recommendation",
        instruction="Given a user's interest, retrieve items the user is most likely to engage with",
    ),
    "moderation": FeedSettings(
        topic="rerank.jobs.moderation",
        instruction=(
            "Given a content policy, judge whether the text violates the policy and must be flagged for review"
        ),
        long_documents="chunk",
        priority=1,
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
        description=(
            "Feeds as JSON: name -> {topic, instruction, long_documents, model, priority, max_in_flight}. One input "
            "topic per feed. long_documents (truncate | chunk, default truncate; the built-in moderation feed: chunk) "
            "and model (default: model.model) apply to jobs that bring none; priority (higher first when the replicas "
            "are saturated; built-in moderation 1, others 0); max_in_flight: the feed's own budget (worker.max_in_flight)."
        ),
    )
    results_topic: str = Field("rerank.results", description="Output topic of ranked results, keyed by job_id.")
    dlq_topic: str = Field("rerank.dlq", description="Dead-letter topic for input that cannot be ranked.")
    auto_create_topics: bool = Field(
        False,
        description="Create missing topics at start-up (local/test mode). Otherwise missing topics are a start-up error.",
    )
    topic_partitions: int = Field(
        4,
        ge=1,
        description=(
            "Partitions per topic: topics created in local mode get this many, and the deploy manifests assume "
            "the input topics have this many (never more consumers than partitions)."
        ),
    )
    replication_factor: int = Field(
        1,
        ge=1,
        description=(
            "Replicas of topics created in local mode: 1 on the single local broker, 3 on the three-broker "
            "cluster (deploy/local/kafka-cluster.sh), so a broker may die."
        ),
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description=(
            "min.insync.replicas of topics created in local mode (unset = the broker's default): with acks=all a "
            "write needs this many replicas; 2 of 3 keeps acknowledged records through one broker failure."
        ),
    )
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
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "zstd",
        description=(
            "Codec of produced results and dead letters (every codec is consumed). zstd measured best here "
            "(ratio 3.1, least CPU; load_tests/bench_codecs.py); readers need Kafka clients >= 2.1. gzip for older readers."
        ),
    )

    static_membership: bool = Field(
        True,
        description=(
            "Join as a static member (group.instance.id = the worker's stable id: worker.worker_id, or the consumer "
            "replica's slot) so a restart within session_timeout_ms gets its partitions back without a rebalance. "
            "Workers without a stable id join as dynamic members."
        ),
    )
    assignor: Literal["cooperative-sticky", "range", "roundrobin"] = Field(
        "cooperative-sticky",
        description=(
            "Partition assignor. cooperative-sticky (KIP-429) moves only the partitions that change owner; the "
            "other members keep consuming. range / roundrobin are eager: every member stops during a rebalance."
        ),
    )
    session_timeout_ms: int = Field(
        15_000,
        ge=6_000,
        le=300_000,
        description=(
            "Consumer session timeout: a silent member's partitions move after this long, and a restarted static "
            "member that returns within it keeps them without a rebalance (15 s: a Serve replica restart here takes 5-10 s)."
        ),
    )
    heartbeat_interval_ms: int = Field(
        1_000,
        ge=100,
        description="Consumer heartbeat interval; at most a third of kafka.session_timeout_ms.",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        return check_bootstrap_servers(v)

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

    @property
    def input_partitions(self) -> int:
        """Partitions of all input topics together: the most consumers of the group that can be busy."""
        return len(self.feeds) * self.topic_partitions

    def feed_for_topic(self, topic: str) -> str | None:
        for name, feed in self.feeds.items():
            if feed.topic == topic:
                return name
        return None


class RedisSettings(Section):
    url: str = Field(
        "redis://127.0.0.1:16379/0",
        description=(
            "Redis URL of the score cache: redis://host:port/db, rediss:// for TLS, unix:///path.sock?db=N; "
            "user:password@ for AUTH. When set, no local Redis is started."
        ),
        json_schema_extra=_env("REDIS_URL"),
    )
    key_prefix: str = Field("rr:v1:", description="Prefix of every cache key.")
    ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Time to live of a cached score, seconds.")
    timeout_s: float = Field(
        0.5, gt=0, description="Socket timeout of cache calls; a slow cache is bypassed, not waited for."
    )
    enabled: bool = Field(True, description="Use the score cache at all.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return check_redis_url(v)


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
    kind: str = Field(
        "auto",
        description=(
            "Model kind: 'auto' detects it from the model's config; otherwise a kind of the engine's "
            "registry (qwen3-reranker, seq-cls, bi-encoder), checked when the model loads."
        ),
    )
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:N or mps.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description=(
            "Weights dtype; auto = bfloat16 on CUDA and on CPUs with native bf16 matmuls (AMX-BF16 or "
            "AVX512-BF16 flag), else float32; the choice and its reason are logged. Set float32 to force full precision."
        ),
    )
    max_length: int = Field(
        8192, ge=16, description="Max tokens per (query, document) pair; capped at the model's maximum."
    )
    max_batch_tokens: int = Field(16384, ge=256, description="Token budget of one forward micro-batch (padded tokens).")
    allowed_models: list[str] = Field(
        default_factory=list,
        description="Extra model names a job may ask for (comma separated); the served model is always allowed.",
    )

    extra_models: dict[str, ExtraModelSettings] = Field(
        default_factory=dict,
        description=(
            "More models served at once, as JSON: name -> {model, aliases, revision, kind, device, dtype, max_length, "
            "max_batch_tokens, min_replicas, max_replicas, initial_replicas, num_cpus, num_gpus} (only model is "
            "required; unset replica options = serve.*). Each is its own Reranker deployment (Reranker-<name>); a job "
            "or request picks one with `model` (name, model id or alias), a feed with kafka.feeds.<feed>.model."
        ),
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)

    @model_validator(mode="after")
    def _names_are_unique(self) -> ModelSettings:
        where = "model.extra_models (RERANK_MODEL_EXTRA_MODELS)"
        if DEFAULT_MODEL in self.extra_models:
            raise ValueError(f"{where}: {DEFAULT_MODEL!r} is the model.* model's key; name the extra model otherwise")
        owner: dict[str, str] = {}
        for key, names in self.names_by_model().items():
            for name in sorted(names):
                if owner.setdefault(name, key) != key:
                    raise ValueError(f"{where}: the name {name!r} picks two models, {owner[name]!r} and {key!r}")
        return self

    def allowed_names(self, served_id: str | None = None) -> set[str]:
        """Names a job or HTTP request may use for the default model: configured, served and allowed_models."""
        return set(self.allowed_models) | {self.model} | ({served_id} if served_id else set())

    @property
    def keys(self) -> list[str]:
        """Every served model's key: DEFAULT_MODEL (this section's model), then the extra models' names."""
        return [DEFAULT_MODEL, *self.extra_models]

    def names_by_model(self, served_id: str | None = None) -> dict[str, set[str]]:
        """Model key -> every name that picks it (``served_id``: what the default replica says it serves)."""
        names = {DEFAULT_MODEL: self.allowed_names(served_id) | {DEFAULT_MODEL}}
        for key, extra in self.extra_models.items():
            names[key] = {key, extra.model, *extra.aliases}
        return names

    def resolve(self, name: str | None, served_id: str | None = None) -> str | None:
        """The key of the model ``name`` picks (None = the default model); None when no model has that name."""
        if name is None:
            return DEFAULT_MODEL
        return next((key for key, names in self.names_by_model(served_id).items() if name in names), None)

    def spec(self, key: str) -> ModelSettings:
        """What to load for a model key (an ExtraModelSettings is a ModelSettings)."""
        return self if key == DEFAULT_MODEL else self.extra_models[key]


class ExtraModelSettings(ModelSettings):
    """One more model served beside the default one: its own Reranker deployment and replicas."""

    model: str = Field(description="Hub id or local directory of the model.")
    aliases: list[str] = Field(default_factory=list, description="More names a job or request may use for it.")
    min_replicas: int | None = Field(None, ge=0, description="serve.min_replicas of this model's deployment.")
    max_replicas: int | None = Field(None, ge=1, description="serve.max_replicas of this model's deployment.")
    initial_replicas: int | None = Field(None, ge=0, description="serve.initial_replicas of this model's deployment.")
    num_cpus: float | None = Field(None, ge=0, description="serve.num_cpus of this model's replicas.")
    num_gpus: float | None = Field(None, ge=0, description="serve.num_gpus of this model's replicas (fractions share).")

    @model_validator(mode="after")
    def _flat(self) -> ExtraModelSettings:
        if self.extra_models or self.allowed_models:
            raise ValueError("an extra model takes aliases, not allowed_models or extra_models")
        return self


ModelSettings.model_rebuild()


class ServeSettings(Section):
    app_name: str = Field("rerank", description="Ray Serve application name.")
    deployment_name: str = Field("Reranker", description="Name of the reranker deployment.")
    http_host: str = Field("127.0.0.1", description="Serve HTTP host.")
    http_port: int = Field(8000, ge=1, le=65535, description="Serve HTTP port.")
    route_prefix: str = Field("/", description="HTTP route prefix of the app.")
    ray_address: str | None = Field(None, description="Address of an existing Ray cluster; unset starts a local one.")
    include_dashboard: bool = Field(False, description="Start the Ray dashboard (costs ~900 MB RSS).")
    proxy_location: Literal["EveryNode", "HeadOnly", "Disabled"] = Field(
        "EveryNode",
        description=(
            "Where Serve runs HTTP proxies. HeadOnly for several Ray nodes on one machine (deploy/local/ray.sh): "
            "their proxies would all bind serve.http_port."
        ),
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per replica.")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per replica; unset = 1 when CUDA is present, else 0. Fractions share a GPU."
    )
    min_replicas: int = Field(1, ge=0, description="Autoscaling lower bound.")
    max_replicas: int = Field(2, ge=1, description="Autoscaling upper bound.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at start (default: min_replicas).")
    target_ongoing_requests: float = Field(2.0, gt=0, description="Autoscaling target of ongoing requests per replica.")
    upscale_delay_s: float = Field(10.0, ge=0, description="Sustained demand needed before adding replicas, seconds.")
    downscale_delay_s: float = Field(
        60.0, ge=0, description="Sustained idleness needed before removing replicas, seconds."
    )
    metrics_interval_s: float = Field(2.0, gt=0, description="How often replicas report queue depth, seconds.")
    look_back_period_s: float = Field(10.0, gt=0, description="Window over which queue depth is averaged, seconds.")
    lag_per_replica: int = Field(
        200,
        ge=1,
        description="Kafka backlog (jobs) one replica is expected to absorb; more backlog asks for more replicas.",
    )
    scale_on_kafka_lag: bool = Field(
        True, description="Also scale on the workers' Kafka consumer lag (off: queue depth only, e.g. HTTP-only use)."
    )
    lag_poll_interval_s: float = Field(
        2.0, gt=0, description="How often the autoscaling policy reads consumer lag, seconds."
    )
    max_batch_size: int = Field(
        8, ge=1, description="Jobs merged into one engine call (one priority per batch, highest waiting first)."
    )
    max_batch_documents: int | None = Field(
        None,
        ge=1,
        description=(
            "Documents in one replica batch (unset: no cap). Batches are not preempted: a lower cap shortens how long "
            "a high-priority job waits behind a computing batch of a bulk feed, at some throughput."
        ),
    )
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="How long a batch waits to fill, seconds.")
    max_ongoing_requests: int | None = Field(
        None,
        ge=1,
        description=(
            "Requests in a replica at once; default 4 * max_batch_size (one batch computing and one filling for each "
            "of two priorities; with 2x, batches of a busy mix ran part-full: pipeline efficiency 0.82-0.88 vs 0.95-1.0). "
            "A replica runs one batch at a time: the engine owns the device."
        ),
    )
    max_queued_requests: int = Field(
        256, ge=-1, description="Per-caller queue cap; beyond it HTTP answers 503 (-1 = unbounded)."
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per replica; unset = the replica's num_cpus (at least 1)."
    )
    request_timeout_s: float = Field(60.0, gt=0, description="HTTP API: longest wait for scores before answering 504.")

    api_keys: SecretStr | None = Field(
        None,
        description=(
            "HTTP API keys: comma separated, or the path of a file with one key per line (a value starting with "
            "/, . or ~). Set: every scoring and model route needs Authorization: Bearer <key> (401 otherwise)."
        ),
        json_schema_extra=_env("RERANK_API_KEYS"),
    )
    metrics_require_key: bool = Field(
        False, description="GET /metrics needs an API key too (when serve.api_keys is set); default open."
    )

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or v.get_secret_value() == SECRET_MASK:
            return v  # a masked dump read back (a worker's copy): no key will match, see api_key_list
        return SecretStr(",".join(parse_api_keys(v.get_secret_value())))

    @field_serializer("api_keys")
    def _dump_api_keys(self, v: SecretStr | None, info: SerializationInfo) -> str | None:
        """Masked unless the dump is for a process that needs the keys (``context=REVEAL_SECRETS``)."""
        if v is None:
            return None
        return v.get_secret_value() if (info.context or {}).get("reveal_secrets") else SECRET_MASK

    def api_key_list(self) -> list[str] | None:
        """None: keys off. A list: keys on; empty when the keys arrived masked, so that nothing is let in."""
        if self.api_keys is None:
            return None
        text = self.api_keys.get_secret_value()
        return [] if text == SECRET_MASK else text.split(",")

    @property
    def ongoing_requests(self) -> int:
        """Effective max_ongoing_requests (keeps batches full: >= max_batch_size)."""
        return self.max_ongoing_requests or 4 * self.max_batch_size


SECRET_MASK = "**********"
REVEAL_SECRETS = {"reveal_secrets": True}
"""``model_dump_json(context=REVEAL_SECRETS)`` keeps secrets: only for the Serve app's own arguments."""
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_KEY_FILE_MAX_BYTES = 1 << 20


def _read_key_file(text: str) -> list[str]:
    path = Path(text).expanduser()
    try:
        if not path.is_file():
            raise ValueError("the key file is missing or not a regular file")
        if path.stat().st_size > _KEY_FILE_MAX_BYTES:
            raise ValueError(f"the key file is over {_KEY_FILE_MAX_BYTES} bytes")
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"the key file cannot be read: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ValueError("the key file is not UTF-8 text") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def parse_api_keys(value: str) -> list[str]:
    """The keys of ``serve.api_keys``: a comma list, or a file (one key per line, # comments) when the value
    starts with ``/``, ``.`` or ``~``. Keys are bearer tokens (RFC 6750), so any of them can be sent in a header;
    errors never quote a key or the path."""
    text = value.strip()
    keys = _read_key_file(text) if text.startswith(("/", ".", "~")) else [k.strip() for k in text.split(",")]
    keys = [k for k in keys if k]
    if not keys:
        raise ValueError("holds no API key")
    for i, key in enumerate(keys, 1):
        if not _BEARER_TOKEN.fullmatch(key):
            raise ValueError(f"key {i} is not a bearer token (letters, digits, - . _ ~ + / and a trailing =)")
    return keys


class LimitsSettings(Section):
    max_documents: int = Field(500, ge=1, description="Documents (candidates) per request or job.")
    max_document_chars: int = Field(20000, ge=1, description="Characters per document.")
    max_query_chars: int = Field(4000, ge=1, description="Characters of a query or instruction.")
    max_total_tokens: int = Field(400_000, ge=1, description="Estimated tokens per request (sum over pairs).")
    max_message_bytes: int = Field(4_000_000, ge=1, description="Size of one Kafka job message.")
    max_dead_letter_bytes: int = Field(
        900_000,
        ge=1024,
        description=(
            "Largest dead letter produced; a bigger one keeps a payload prefix plus the original size and "
            "SHA-256 (payload_truncated). Keep it below the producer's 1 MiB request size and the DLQ topic's max.message.bytes."
        ),
    )


class WorkerSettings(Section):
    worker_id: str | None = Field(None, description="Worker identity in results and metrics; default host:pid.")
    max_in_flight: int = Field(
        16,
        ge=1,
        description=(
            "Jobs of one feed scored concurrently per worker (each feed its own budget, kafka.feeds.<feed>.max_in_flight "
            "overrides); that feed's partitions pause beyond it, the other feeds keep going."
        ),
    )
    chunk_documents: int = Field(128, ge=1, description="Documents per Serve call; larger jobs are split.")
    scoring_retries: int = Field(
        3, ge=0, description="Retries of a failed scoring call before the job is dead-lettered."
    )
    retry_backoff_s: float = Field(0.5, ge=0, description="First retry delay, doubled each retry.")
    scoring_timeout_s: float = Field(120.0, gt=0, description="Timeout of one Serve scoring call, seconds.")
    commit_interval_s: float = Field(0.5, gt=0, description="How often finished offsets are committed, seconds.")
    poll_max_records: int = Field(256, ge=1, description="Max records per consumer poll.")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port of the worker's Prometheus endpoint; unset = off."
    )
    log_interval_s: float = Field(
        30.0, gt=0, description="Minimum seconds between repeated warnings (e.g. cache down)."
    )
    min_consumers: int = Field(
        1,
        ge=0,
        description="Fewest consumer processes when consumers scale on lag (KEDA minReplicaCount; 0 = scale to zero).",
    )
    max_consumers: int = Field(
        8,
        ge=1,
        description=(
            "Most consumer processes when consumers scale on lag (KEDA maxReplicaCount), capped at the input "
            "partitions (feeds x kafka.topic_partitions): a consumer beyond them would sit idle."
        ),
    )
    lag_per_consumer: int = Field(
        100,
        ge=1,
        description="Kafka backlog (jobs) one consumer is expected to absorb; more asks for another (KEDA lagThreshold).",
    )
    activation_lag: int = Field(
        10,
        ge=0,
        description="Backlog at or below which consumers stay at min_consumers (KEDA activationLagThreshold).",
    )
    consumer_upscale_delay_s: float = Field(
        10.0, ge=0, description="Cluster mode: sustained backlog needed before Serve adds consumer replicas, seconds."
    )
    consumer_downscale_delay_s: float = Field(
        120.0, ge=0, description="Cluster mode: sustained low backlog needed before consumer replicas leave, seconds."
    )
    stuck_partition_s: float = Field(
        120.0,
        gt=0,
        description=(
            "Cluster mode: a partition whose committed offset has not moved this long while it has lag is left out "
            "of the consumers' lag (KEDA excludePersistentLag), so one stuck partition cannot pin them at max."
        ),
    )
    consumer_num_cpus: float = Field(
        0.25, ge=0, description="Cluster mode: CPUs Ray reserves per consumer replica (a Kafka loop, no model)."
    )


class TracingSettings(Section):
    """OpenTelemetry traces of both doors (serve_app/tracing.py); off unless an endpoint is configured."""

    otlp_endpoint: str | None = Field(
        None,
        description=(
            "OTLP/HTTP base URL of a trace collector (e.g. http://collector:4318; spans go to <url>/v1/traces). "
            "Unset = the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT; none of them "
            "= no tracing (no-op tracer; traceparent headers are still passed on)."
        ),
    )
    service_name: str = Field("rerank-stream", min_length=1, description="service.name of the exported spans.")
    sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded; a job or request with a traceparent follows its sampled flag.",
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v.strip()):
            raise ValueError("must be an http:// or https:// URL, e.g. http://collector:4318")
        return None if v is None else v.strip()


class Settings(BaseModel):
    """All configuration of rerank-stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    model: ModelSettings = ModelSettings()
    serve: ServeSettings = ServeSettings()
    limits: LimitsSettings = LimitsSettings()
    worker: WorkerSettings = WorkerSettings()
    tracing: TracingSettings = TracingSettings()

    @model_validator(mode="after")
    def _feed_models(self) -> Settings:
        for name, feed in self.kafka.feeds.items():
            if feed.model is not None and self.model.resolve(feed.model) is None:
                names = sorted(n for group in self.model.names_by_model().values() for n in group)
                raise ValueError(f"kafka.feeds.{name}.model = {feed.model!r} is not a served model; names: {names}")
        return self

    def feed_model(self, feed: str) -> str:
        """Key of the model a feed's jobs use when they name none."""
        return self.model.resolve(self.kafka.feeds[feed].model) or DEFAULT_MODEL

    def reranker_deployment(self, key: str = DEFAULT_MODEL) -> str:
        """The Serve deployment of a model key: serve.deployment_name, with -<name> for an extra model."""
        return self.serve.deployment_name if key == DEFAULT_MODEL else f"{self.serve.deployment_name}-{key}"

    @field_validator("worker")
    @classmethod
    def _consumer_bounds(cls, v: WorkerSettings) -> WorkerSettings:
        if v.min_consumers > v.max_consumers:
            raise ValueError(
                f"worker.min_consumers ({env_var('worker', 'min_consumers')}) = {v.min_consumers} exceeds "
                f"worker.max_consumers ({env_var('worker', 'max_consumers')}) = {v.max_consumers}"
            )
        return v

    @field_validator("kafka")
    @classmethod
    def _heartbeat(cls, v: KafkaSettings) -> KafkaSettings:
        if v.min_insync_replicas is not None and v.min_insync_replicas > v.replication_factor:
            raise ValueError(
                f"kafka.min_insync_replicas ({env_var('kafka', 'min_insync_replicas')}) = {v.min_insync_replicas} "
                f"exceeds kafka.replication_factor ({env_var('kafka', 'replication_factor')}) = {v.replication_factor}"
            )
        if 3 * v.heartbeat_interval_ms > v.session_timeout_ms:
            raise ValueError(
                f"kafka.heartbeat_interval_ms ({env_var('kafka', 'heartbeat_interval_ms')}) = {v.heartbeat_interval_ms}"
                f" exceeds a third of kafka.session_timeout_ms ({env_var('kafka', 'session_timeout_ms')}) = "
                f"{v.session_timeout_ms}"
            )
        return v

    @field_validator("serve")
    @classmethod
    def _replica_bounds(cls, v: ServeSettings) -> ServeSettings:
        def key(name: str) -> str:
            return f"serve.{name} ({env_var('serve', name)}) = {getattr(v, name)}"

        if v.min_replicas > v.max_replicas:
            raise ValueError(f"{key('min_replicas')} exceeds {key('max_replicas')}")
        if v.max_ongoing_requests is not None and v.max_ongoing_requests < v.max_batch_size:
            raise ValueError(
                f"{key('max_ongoing_requests')} is below {key('max_batch_size')}: batches could never fill"
            )
        if v.look_back_period_s <= v.metrics_interval_s:
            raise ValueError(f"{key('look_back_period_s')} must exceed {key('metrics_interval_s')}")
        return v


class ConfigError(ValueError):
    """Configuration could not be loaded: one problem per line, each naming the setting, so all are fixed in one go."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = [_one_line(p) for p in ([problems] if isinstance(problems, str) else problems)]
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[Any, ...]:  # keeps the list of problems when pickled (Ray)
        return type(self), (self.problems,)


def env_var(section: str, field: str) -> str:
    """The one environment variable that sets ``section.field``."""
    info = Settings.model_fields[section].annotation.model_fields[field]  # type: ignore[union-attr]
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return str(extra.get("env") or f"RERANK_{section}_{field}".upper())


def _fields() -> Iterable[tuple[str, str, Any]]:
    """(section, field name, field info) of every setting, in table order."""
    for section, section_field in Settings.model_fields.items():
        for name, info in section_field.annotation.model_fields.items():  # type: ignore[union-attr]
            yield section, name, info


def known_env_vars() -> frozenset[str]:
    """Every environment variable rerank-stream reads: one per setting plus OTHER_ENV_VARS."""
    return frozenset({env_var(section, name) for section, name, _ in _fields()} | OTHER_ENV_VARS)


_SECRET_FIELDS = frozenset({("kafka", "sasl_password"), ("serve", "api_keys")})
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^/\s]*@")
_warned_env_vars: set[str] = set()


def _one_line(text: str) -> str:
    """Escapes newlines and other unprintable characters: each problem stays one line of an operator's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _show(value: Any, secret: bool = False) -> str:
    """An offending value as shown in an error: repr, passwords masked, long values cut."""
    if secret:
        return "'***'"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long to print: the type is enough
        text = f"<{type(value).__name__}>"
    text = _one_line(_URL_PASSWORD.sub(r"\1***@", text))
    return text if len(text) <= 80 else text[:77] + "..."


def _name(key: Any) -> str:
    """A key of the config file as written when it is a plain word, quoted otherwise (so '' stays visible)."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w.-]+", key) else _show(key)


def _did_you_mean(word: str, choices: Iterable[str] | Mapping[str, str], cutoff: float = 0.6) -> str:
    """`` (did you mean X?)`` for the closest choice; a mapping's keys are matched and its values suggested."""
    aliases = dict(choices) if isinstance(choices, Mapping) else {c: c for c in choices}
    close = difflib.get_close_matches(word, sorted(aliases), n=1, cutoff=cutoff)
    return f" (did you mean {aliases[close[0]]}?)" if close else ""


def warn_unknown_env_vars(environ: Mapping[str, str]) -> list[str]:
    """Warn (once per variable and process) about unknown RERANK_* variables: most are typos that do nothing."""
    known = known_env_vars()
    unknown = sorted(var for var in environ if var.startswith(_ENV_PREFIX) and var not in known)
    # REDIS_URL is easily misspelt with the prefix: match the unprefixed names under the prefix too
    candidates = {var: var for var in known} | {
        _ENV_PREFIX + var: var for var in known if not var.startswith(_ENV_PREFIX)
    }
    for var in unknown:
        if var not in _warned_env_vars:
            _warned_env_vars.add(var)
            hint = _did_you_mean(var, candidates, cutoff=0.8) or " (not a rerank-stream setting)"
            log.warning("unknown environment variable %s is ignored%s", _one_line(var), hint)
    return unknown


def _json_kind(annotation: Any) -> type | None:
    origin = typing.get_origin(annotation) or annotation
    return origin if origin in (dict, list) else None


def _parse_env_value(raw: str, annotation: Any) -> Any:
    """Env text -> input for pydantic: JSON for mappings, JSON or a comma list for lists, the stripped text otherwise."""
    text = raw.strip()
    kind = _json_kind(annotation)
    if kind is dict or (kind is list and text.startswith("[")):
        return json.loads(text)
    if kind is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _read_config_file(
    path: Path, problems: list[str], sources: dict[tuple[str, str], str], named_by: str = ""
) -> dict[str, dict]:
    """The file's known sections and keys; bad YAML, unknown sections and keys are appended to problems."""
    where = f"config file {_one_line(str(path))}"
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problems.append(f"{where}: invalid YAML{at}: {exc.problem or exc.context or exc}")
        return {}
    except OSError as exc:
        problems.append(f"{where}{named_by}: cannot be read: {exc.strerror or exc}")
        return {}
    except UnicodeDecodeError:
        problems.append(f"{where}: is not UTF-8 text")
        return {}
    except RecursionError:
        problems.append(f"{where}: invalid YAML: nested too deeply")
        return {}
    except (ValueError, yaml.YAMLError) as exc:  # e.g. a NUL in the path, an integer too long to parse
        problems.append(f"{where}: cannot be loaded: {exc}")
        return {}
    if loaded is None:  # an empty file
        return {}
    sections = Settings.model_fields
    if not isinstance(loaded, dict):
        problems.append(f"{where}: must be a mapping of sections ({', '.join(sections)}), not {type(loaded).__name__}")
        return {}
    data: dict[str, dict] = {}
    for section, body in loaded.items():
        if section not in sections:
            hint = _did_you_mean(section, list(sections)) if isinstance(section, str) else ""
            problems.append(f"{where}: unknown section {_name(section)}{hint}; sections are {', '.join(sections)}")
        elif body is not None and not isinstance(body, dict):
            problems.append(f"{where}: section {section} must be a mapping of keys, not {type(body).__name__}")
        else:
            fields = sections[section].annotation.model_fields  # type: ignore[union-attr]
            for key, value in (body or {}).items():
                if key in fields:
                    data.setdefault(section, {})[key] = value
                    sources[(section, key)] = str(path)
                else:
                    hint = _did_you_mean(key, list(fields)) if isinstance(key, str) else ""
                    hint = hint.replace("(did you mean ", f"(did you mean {section}.")
                    problems.append(f"{section}.{_name(key)}: unknown key in {where}{hint}")
    return data


def _describe(err: Mapping[str, Any], sources: Mapping[tuple[str, str], str]) -> str:
    """One pydantic error as ``key (ENV_VAR) = value [in file]: why``."""
    loc = [str(part) for part in err["loc"]]
    why = str(err["msg"]).removeprefix("Value error, ")
    if len(loc) < 2:  # a check across fields of a section: its message names them
        return why if not loc or why.startswith(f"{loc[0]}.") else f"{loc[0]}: {why}"
    section, name = loc[0], loc[1]
    key = ".".join(loc)
    try:
        key += f" ({env_var(section, name)})"
    except KeyError:
        pass
    if err["type"] != "missing":
        key += f" = {_show(err['input'], secret=(section, name) in _SECRET_FIELDS)}"
    source = sources.get((section, name), "env")
    return f"{key}{'' if source == 'env' else ' in ' + source}: {why}"


def load_settings(config_file: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate settings from defaults, an optional YAML file and the environment.

    An empty environment value means the default. Every problem is reported at once (one ConfigError line
    each) rather than the first only, so a broken deployment is fixed in one round.
    """
    environ = os.environ if environ is None else environ
    warn_unknown_env_vars(environ)
    problems: list[str] = []
    sources: dict[tuple[str, str], str] = {}
    path = config_file or environ.get(CONFIG_FILE_ENV, "").strip()
    named_by = "" if config_file else f" ({CONFIG_FILE_ENV})"
    data = _read_config_file(Path(path), problems, sources, named_by) if path else {}
    for section, name, info in _fields():
        var = env_var(section, name)
        raw = environ.get(var)
        if raw is None or not raw.strip():
            continue  # unset or empty: the file's value or the default
        try:
            value = _parse_env_value(raw, info.annotation)
        except (ValueError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            shown = _show(raw.strip(), secret=(section, name) in _SECRET_FIELDS)
            problems.append(f"{section}.{name} ({var}) = {shown}: invalid JSON ({why})")
            data.get(section, {}).pop(name, None)  # reported; the file's value must not hide it
            continue
        data.setdefault(section, {})[name] = value
        sources[(section, name)] = "env"
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems.extend(_describe(err, sources) for err in exc.errors())
    if problems or settings is None:
        raise ConfigError(problems)
    return settings


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
