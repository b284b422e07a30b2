"""Kubernetes manifests of rerank-stream, generated from one source of settings.

The source is ``deploy/k8s/config.yaml``: the ConfigMap whose variables every pod reads, loaded
with ``load_settings`` exactly as a pod loads them. From those settings come

- the KubeRay ``RayService``: ``serveConfigV2`` is ``serve_app.app.serve_config`` (the function
  behind ``deploy/serve_config.yaml``), a CPU head group, worker groups sized from the Serve
  deployments' resources and replica bounds, the Ray autoscaler on;
- for consumers run outside Ray, a ``Deployment`` of ``rerank-stream worker`` and a KEDA
  ``ScaledObject`` on the consumer group's lag (thresholds and bounds from ``worker.*``, never more
  consumers than input partitions).

Secrets (Redis URL with its AUTH password, Kafka SASL, API keys) are referenced by name, never written.

Seam for consumers run by Ray (cluster mode): add their Serve deployment to ``serve_config`` in
``serve_app/app.py``. ``worker_groups`` sizes Ray worker groups from every deployment there, so a
CPU deployment with replica bounds gets a CPU worker group here with no other change.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml

from schemas.settings import Settings, env_var, known_env_vars, load_settings
from serve_app.app import serve_config

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "k8s"
CONFIG_MAP_FILE = K8S_DIR / "config.yaml"
RAYSERVICE_FILE = K8S_DIR / "rayservice.yaml"
CONSUMERS_FILE = K8S_DIR / "consumers.yaml"

NAME = "rerank"  # the RayService; KubeRay names its head service f"{NAME}-head-svc"
CONSUMERS = "rerank-consumers"
SECRET = "rerank-secrets"
KAFKA_AUTH = "rerank-kafka"  # KEDA TriggerAuthentication
LABELS = {"app.kubernetes.io/name": "rerank-stream"}
IMAGE = "rerank-stream"
USER_ID = 1000  # the image's non-root user (deploy/docker/Dockerfile)
RAY_METRICS_PORT = 8080
MODEL_CACHE = "/models"  # HF_HOME in the image
DRAIN_MARGIN_S = 30  # a stopping consumer finishes in-flight jobs (each within worker.scoring_timeout_s), then commits
SCALE_DOWN_WINDOW_S = 120  # consumers leave only after the backlog stayed low this long


@dataclass(frozen=True)
class PodSize:
    """Resources of one Ray pod; edit to match the cluster's nodes."""

    cpus: int
    memory: str
    gpus: int = 0


HEAD_POD = PodSize(cpus=2, memory="8Gi")
GPU_POD = PodSize(cpus=4, memory="24Gi", gpus=1)
CPU_POD = PodSize(cpus=4, memory="8Gi")
CONSUMER_RESOURCES = {"requests": {"cpu": "500m", "memory": "1536Mi"}, "limits": {"memory": "3Gi"}}
# A Ray driver must run on a Ray node: each consumer pod joins the cluster as a node without CPUs (no
# replica or proxy lands there), then becomes the worker process (PID 1, so SIGTERM drains it).
CONSUMER_COMMAND = (
    'ray start --address="$RERANK_SERVE_RAY_ADDRESS" --num-cpus=0 --object-store-memory=100000000 '
    "&& exec rerank-stream worker"
)


@dataclass(frozen=True)
class SecretRef:
    """A setting whose value comes from a key of the Secret ``rerank-secrets``."""

    section: str
    field: str
    key: str
    optional: bool = False  # absent key = setting unset (the pod still starts)
    ray_only: bool = False  # only the Ray pods need it (the HTTP API lives there)
    sasl: bool = False  # referenced only when kafka.security_protocol uses SASL


SECRET_REFS = (
    SecretRef("redis", "url", "redis-url"),  # the Redis AUTH password lives in the URL
    SecretRef("kafka", "sasl_username", "kafka-sasl-username", sasl=True),
    SecretRef("kafka", "sasl_password", "kafka-sasl-password", sasl=True),
    SecretRef("serve", "api_keys", "api-keys", optional=True, ray_only=True),  # unset: HTTP API open
)
KEDA_AUTH_PARAMETER = {"sasl_username": "username", "sasl_password": "password"}
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


# -- the settings source ----------------------------------------------------------------------------


def config_map_env(path: Path = CONFIG_MAP_FILE) -> dict[str, str]:
    """The ConfigMap's variables; an unknown name is an error here (a pod would only warn and ignore it)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    env = {str(k): str(v) for k, v in (doc.get("data") or {}).items()}
    unknown = sorted(set(env) - known_env_vars())
    if unknown:
        raise ValueError(f"{path}: not rerank-stream settings: {', '.join(unknown)}")
    return env


def k8s_settings(path: Path = CONFIG_MAP_FILE) -> Settings:
    """The settings every pod gets (secrets aside): the ConfigMap read the way a pod reads it."""
    return load_settings(environ=config_map_env(path))


def image(variant: str) -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return f"{IMAGE}:{version}-{variant}"


# -- pods ---------------------------------------------------------------------------------------------


def _uses_sasl(settings: Settings) -> bool:
    return settings.kafka.security_protocol.startswith("SASL")


def _secret_refs(settings: Settings, *, ray_pod: bool) -> list[SecretRef]:
    return [ref for ref in SECRET_REFS if (ray_pod or not ref.ray_only) and (_uses_sasl(settings) or not ref.sasl)]


def secret_env(settings: Settings, *, ray_pod: bool) -> list[dict[str, Any]]:
    """Environment variables read from the Secret: names from the settings, values never in a manifest."""
    return [
        {
            "name": env_var(ref.section, ref.field),
            "valueFrom": {"secretKeyRef": {"name": SECRET, "key": ref.key, "optional": ref.optional}},
        }
        for ref in _secret_refs(settings, ray_pod=ray_pod)
    ]


def _resources(size: PodSize) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": str(size.cpus), "memory": size.memory}
    if size.gpus:
        amounts["nvidia.com/gpu"] = size.gpus
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _pod_spec(container: dict[str, Any], volumes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    container = {
        **container,
        "envFrom": [{"configMapRef": {"name": "rerank-config"}}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    spec: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID, "fsGroup": USER_ID},
        "containers": [container],
        **extra,
    }
    if volumes:
        spec["volumes"] = volumes
    return spec


def _ray_pod(component: str, size: PodSize, settings: Settings, ports: dict[str, int]) -> dict[str, Any]:
    """Pod template of a Ray node; KubeRay adds the `ray start` command and its own probes."""
    mounts = [{"name": "shm", "mountPath": "/dev/shm"}]
    volumes: list[dict[str, Any]] = [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
    extra: dict[str, Any] = {}
    if component != "ray-head":
        mounts.append({"name": "model-cache", "mountPath": MODEL_CACHE})
        volumes.append({"name": "model-cache", "emptyDir": {"sizeLimit": "40Gi"}})
    if size.gpus:
        extra["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    container = {
        "name": component,
        "image": image("cuda" if size.gpus else "cpu"),
        "env": secret_env(settings, ray_pod=True),
        "ports": [{"name": name, "containerPort": port} for name, port in ports.items()],
        "resources": _resources(size),
        "volumeMounts": mounts,
    }
    return {
        "metadata": {"labels": {**LABELS, "app.kubernetes.io/component": component}},
        "spec": _pod_spec(container, volumes, **extra),
    }


# -- RayService ---------------------------------------------------------------------------------------


def _deployments(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for app in cfg["applications"] for d in app.get("deployments", [])]


def _replica_bounds(deployment: dict[str, Any]) -> tuple[int, int]:
    auto = deployment.get("autoscaling_config")
    if auto:
        return int(auto["min_replicas"]), int(auto["max_replicas"])
    n = int(deployment.get("num_replicas", 1))
    return n, n


def worker_groups(cfg: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """Ray worker groups that fit the Serve deployments at their replica bounds.

    A deployment that needs a GPU goes to GPU pods, one that needs only CPUs to CPU pods, one that
    needs neither (the HTTP ingress) to the head. Pods per group = ceil(sum over its deployments of
    replicas x the share of a pod one replica takes), at min replicas and at max replicas.
    """
    share: dict[str, list[float]] = {}
    for d in _deployments(cfg):
        opts = d.get("ray_actor_options") or {}
        gpus, cpus = float(opts.get("num_gpus") or 0), float(opts.get("num_cpus") or 0)
        if gpus:
            group, per_replica = "gpu", max(gpus / GPU_POD.gpus, cpus / GPU_POD.cpus)
        elif cpus:
            group, per_replica = "cpu", cpus / CPU_POD.cpus
        else:
            continue
        if per_replica > 1:
            raise ValueError(f"a {d['name']} replica needs more than one {group} pod: raise the pod size in {__name__}")
        lo, hi = _replica_bounds(d)
        totals = share.setdefault(group, [0.0, 0.0])
        totals[0] += lo * per_replica
        totals[1] += hi * per_replica
    groups = []
    for group, (lo_pods, hi_pods) in sorted(share.items(), key=lambda item: item[0] != "gpu"):
        size = GPU_POD if group == "gpu" else CPU_POD
        low, high = math.ceil(round(lo_pods, 6)), max(1, math.ceil(round(hi_pods, 6)))
        ports = {"serve": settings.serve.http_port, "metrics": RAY_METRICS_PORT}
        groups.append(
            {
                "groupName": group,
                "replicas": low,
                "minReplicas": low,
                "maxReplicas": high,
                "rayStartParams": {"metrics-export-port": str(RAY_METRICS_PORT)},
                "template": _ray_pod(f"ray-{group}-worker", size, settings, ports),
            }
        )
    return groups


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks (serveConfigV2 reads like the YAML it is); no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_LiteralDumper.add_representer(
    str,
    lambda dumper, s: dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def rayservice(settings: Settings) -> dict[str, Any]:
    cfg = serve_config(settings)
    head_ports = {
        "gcs-server": 6379,
        "dashboard": 8265,
        "client": 10001,
        "serve": settings.serve.http_port,
        "metrics": RAY_METRICS_PORT,
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": NAME, "labels": dict(LABELS)},
        "spec": {
            "serveConfigV2": yaml.safe_dump(cfg, sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": ray.__version__,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 60},
                "headGroupSpec": {
                    # No replicas on the head: it runs the Serve controller, the proxy and the ingress.
                    "rayStartParams": {
                        "num-cpus": "0",
                        "dashboard-host": "0.0.0.0",
                        "metrics-export-port": str(RAY_METRICS_PORT),
                    },
                    "template": _ray_pod("ray-head", HEAD_POD, settings, head_ports),
                },
                "workerGroupSpecs": worker_groups(cfg, settings),
            },
        },
    }


# -- consumers outside Ray: Deployment + KEDA -------------------------------------------------------


def consumer_bounds(settings: Settings) -> tuple[int, int]:
    """(min, max) consumer pods: worker.min/max_consumers, never more than the input partitions."""
    high = min(settings.worker.max_consumers, settings.kafka.input_partitions)
    return min(settings.worker.min_consumers, high), high


def _kafka_trigger(settings: Settings, topic: str | None) -> dict[str, Any]:
    k, w = settings.kafka, settings.worker
    meta = {
        "bootstrapServers": k.bootstrap_servers,
        "consumerGroup": k.group_id,
        "lagThreshold": str(w.lag_per_consumer),
        "activationLagThreshold": str(w.activation_lag),
        "offsetResetPolicy": "earliest",  # as the workers' consumers
        "allowIdleConsumers": "false",  # never more consumers than partitions
        "excludePersistentLag": "true",  # a stuck partition must not pin the count at max
    }
    if topic:
        meta["topic"] = topic
    if k.security_protocol in ("SSL", "SASL_SSL"):
        meta["tls"] = "enable"
    trigger: dict[str, Any] = {"type": "kafka", "metadata": meta}
    if _uses_sasl(settings):
        if k.sasl_mechanism not in KEDA_SASL:
            raise ValueError(
                f"kafka.sasl_mechanism ({env_var('kafka', 'sasl_mechanism')}) = {k.sasl_mechanism!r}: "
                f"KEDA's Kafka scaler takes {', '.join(KEDA_SASL)}"
            )
        meta["sasl"] = KEDA_SASL[k.sasl_mechanism]
        trigger["authenticationRef"] = {"name": KAFKA_AUTH}
    return trigger


def consumers(settings: Settings) -> list[dict[str, Any]]:
    """Deployment of `rerank-stream worker`, its KEDA ScaledObject and (with SASL) TriggerAuthentication."""
    w, k = settings.worker, settings.kafka
    if w.metrics_port is None:
        raise ValueError(
            f"worker.metrics_port ({env_var('worker', 'metrics_port')}) must be set in {CONFIG_MAP_FILE.name}: "
            "the consumers' probe and Prometheus read it"
        )
    low, high = consumer_bounds(settings)
    labels = {**LABELS, "app.kubernetes.io/component": "consumer"}
    container = {
        "name": "worker",
        "image": image("cpu"),
        "command": ["bash", "-c", CONSUMER_COMMAND],
        "env": [
            *secret_env(settings, ray_pod=False),
            # a stable, unique id per pod: static group membership and exactly-once fencing use it
            {"name": env_var("worker", "worker_id"), "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [{"name": "metrics", "containerPort": w.metrics_port}],
        "livenessProbe": {
            "httpGet": {"path": "/metrics", "port": "metrics"},
            "initialDelaySeconds": 30,
            "periodSeconds": 20,
            "failureThreshold": 3,
        },
        "resources": CONSUMER_RESOURCES,
    }
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(w.metrics_port)}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": CONSUMERS, "labels": labels},
        # no `replicas`: KEDA's HPA owns the count
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": _pod_spec(
                    container, [], terminationGracePeriodSeconds=math.ceil(w.scoring_timeout_s) + DRAIN_MARGIN_S
                ),
            },
        },
    }
    triggers = [_kafka_trigger(settings, None)]  # the whole group's lag, capped at all its partitions
    if low == 0:  # from zero no member is subscribed: name the topics so their lag is still seen
        triggers += [_kafka_trigger(settings, topic) for topic in k.input_topics]
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": CONSUMERS, "labels": labels},
        "spec": {
            "scaleTargetRef": {"name": CONSUMERS},
            "minReplicaCount": low,
            "maxReplicaCount": high,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW_S}}
                }
            },
            "triggers": triggers,
        },
    }
    docs = [deployment, scaled]
    if _uses_sasl(settings):
        docs.append(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "TriggerAuthentication",
                "metadata": {"name": KAFKA_AUTH, "labels": labels},
                "spec": {
                    "secretTargetRef": [
                        {"parameter": KEDA_AUTH_PARAMETER[ref.field], "name": SECRET, "key": ref.key}
                        for ref in _secret_refs(settings, ray_pod=False)
                        if ref.field in KEDA_AUTH_PARAMETER
                    ]
                },
            }
        )
    return docs


# -- rendering ----------------------------------------------------------------------------------------

_HEAD = (
    "# Generated by `make manifests` (python -m deploy.generate) from deploy/k8s/config.yaml; do not edit.\n# {what}\n"
)


def render_rayservice(settings: Settings) -> str:
    what = "KubeRay RayService: serveConfigV2 = serve_app.app.serve_config (as deploy/serve_config.yaml)."
    return _HEAD.format(what=what) + yaml.dump(rayservice(settings), Dumper=_LiteralDumper, sort_keys=False)


def render_consumers(settings: Settings) -> str:
    what = "Consumers outside Ray: Deployment of `rerank-stream worker`, KEDA ScaledObject on consumer lag."
    return _HEAD.format(what=what) + yaml.dump_all(consumers(settings), Dumper=_LiteralDumper, sort_keys=False)
