"""The Kubernetes manifests and the Serve config: generated from one function, current, valid for Ray,
Kubernetes and KEDA, wired by real settings, secrets only referenced. Offline: no cluster, no services."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import ray
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from ray.serve.schema import ServeDeploySchema

from deploy import generate, manifests
from deploy.manifests import CONFIG_MAP_FILE, CONSUMERS_FILE, RAYSERVICE_FILE, consumer_bounds, consumers, worker_groups
from schemas.settings import Settings, env_var, load_settings
from serve_app.app import SERVE_CONFIG, serve_config
from tests.support.manifest_docs import env_entries, mappings, unknown_settings, yaml_docs

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.30.0"  # the oldest Kubernetes these manifests claim to fit (KEDA 2.1x, KubeRay 1.x run there)
SECRET_VARS = {env_var(ref.section, ref.field) for ref in manifests.SECRET_REFS}
TYPO = env_var("serve", "num_gpus")[:-1]  # a misspelt setting (built, so the repo-wide name scan skips it)


def _rayservice() -> dict[str, Any]:
    return yaml_docs(RAYSERVICE_FILE)[0]


def _serve_config_v2() -> dict[str, Any]:
    return yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])


def _k8s_docs() -> list[dict[str, Any]]:
    return [d for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")) for d in yaml_docs(path)]


def _settings(**env: str) -> Settings:
    return load_settings(environ={**manifests.config_map_env(), **env})


# -- one generator, no drift --------------------------------------------------------------------------


def test_committed_files_equal_the_generators_output():
    assert generate.stale() == [], "generated deploy files are stale: run `make manifests`"


def test_drift_is_detected(tmp_path):
    """A ConfigMap edit without regeneration changes what the generator makes (so stale() would name it)."""
    edited = tmp_path / "config.yaml"
    doc = yaml.safe_load(CONFIG_MAP_FILE.read_text())
    doc["data"]["RERANK_SERVE_MAX_REPLICAS"] = "6"
    edited.write_text(yaml.safe_dump(doc))
    text = manifests.render_rayservice(manifests.k8s_settings(edited))
    assert text != RAYSERVICE_FILE.read_text()
    gpu = yaml.safe_load(text)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (1, 6)
    assert "max_replicas: 6" in yaml.safe_load(text)["spec"]["serveConfigV2"]


def test_an_unknown_variable_in_the_config_map_is_an_error(tmp_path):
    edited = tmp_path / "config.yaml"
    doc = yaml.safe_load(CONFIG_MAP_FILE.read_text())
    doc["data"][TYPO] = "1"
    edited.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=TYPO):
        manifests.k8s_settings(edited)


def test_serve_configs_validate_with_rays_own_schema():
    for name, doc in (
        ("deploy/serve_config.yaml", yaml.safe_load(SERVE_CONFIG.read_text())),
        ("serveConfigV2", _serve_config_v2()),
    ):
        schema = ServeDeploySchema.model_validate(doc)
        app = schema.applications[0]
        assert app.import_path == "serve_app.app:app_builder", name
        assert {d.name for d in app.deployments} >= {"Reranker", "RerankAPI"}, name


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in sorted(set(a) | set(b)) for p in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def test_serve_config_v2_and_serve_config_yaml_come_from_the_same_settings():
    """Same function, same settings: the k8s ConfigMap only moves the Reranker onto a GPU."""
    v2, local = _serve_config_v2(), yaml.safe_load(SERVE_CONFIG.read_text())
    assert v2 == serve_config(manifests.k8s_settings())
    assert _differences(local, v2) == [".applications[0].deployments[0].ray_actor_options.num_gpus"]
    assert (
        local["applications"][0]["deployments"][0]["ray_actor_options"]["num_gpus"],
        v2["applications"][0]["deployments"][0]["ray_actor_options"]["num_gpus"],
    ) == (0.0, 1.0)


def test_the_difference_checker_can_fail():
    assert _differences({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == [".a[1].b"]


# -- RayService ---------------------------------------------------------------------------------------


def test_rayservice_has_a_cpu_head_a_gpu_worker_group_and_the_autoscaler_on():
    spec = _rayservice()["spec"]["rayClusterConfig"]
    s = manifests.k8s_settings()
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["image"].endswith("-cpu") and "nvidia.com/gpu" not in head_container["resources"]["limits"]
    [gpu] = spec["workerGroupSpecs"]
    assert (gpu["minReplicas"], gpu["maxReplicas"]) == (s.serve.min_replicas, s.serve.max_replicas)
    container = gpu["template"]["spec"]["containers"][0]
    assert container["image"].endswith("-cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "model-cache", "mountPath": manifests.MODEL_CACHE} in container["volumeMounts"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["serve"] == s.serve.http_port
    for c in (head_container, container):
        assert c["envFrom"] == [{"configMapRef": {"name": "rerank-config"}}]


def _cfg(*deployments: dict[str, Any]) -> dict[str, Any]:
    return {"applications": [{"name": "a", "import_path": "x:y", "deployments": list(deployments)}]}


def _dep(name: str, cpus: float, gpus: float, lo: int, hi: int) -> dict[str, Any]:
    return {
        "name": name,
        "ray_actor_options": {"num_cpus": cpus, "num_gpus": gpus},
        "autoscaling_config": {"min_replicas": lo, "max_replicas": hi},
    }


def test_worker_groups_follow_the_serve_deployments():
    """The seam for consumers run by Ray: a CPU deployment in serve_config gets its own CPU worker group."""
    s = Settings()
    ingress = {"name": "RerankAPI", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}
    consumer = _dep("KafkaConsumer", 1, 0, 1, 6)
    groups = worker_groups(_cfg(_dep("Reranker", 1, 1, 1, 2), ingress, consumer), s)
    assert [(g["groupName"], g["minReplicas"], g["maxReplicas"]) for g in groups] == [("gpu", 1, 2), ("cpu", 1, 2)]
    cpu_container = groups[1]["template"]["spec"]["containers"][0]
    assert cpu_container["image"].endswith("-cpu") and "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    # fractional GPUs share pods; nothing but the ingress: no worker group at all
    assert [(g["minReplicas"], g["maxReplicas"]) for g in worker_groups(_cfg(_dep("R", 1, 0.5, 1, 3)), s)] == [(1, 2)]
    assert worker_groups(_cfg(ingress), s) == []
    with pytest.raises(ValueError, match="more than one gpu pod"):
        worker_groups(_cfg(_dep("Huge", 1, 2, 1, 1)), s)


@settings(max_examples=60, deadline=None)
@given(
    lo=st.integers(0, 8),
    extra=st.integers(0, 24),
    gpus=st.sampled_from([0.25, 0.5, 1.0]),
    cpus=st.sampled_from([0.0, 0.5, 1.0, 4.0]),
)
def test_worker_group_sizes_hold_every_replica(lo, extra, gpus, cpus):
    hi = lo + extra
    [group] = worker_groups(_cfg(_dep("R", cpus, gpus, lo, max(hi, 1))), Settings())
    pods_needed = max(hi, 1) * max(gpus / manifests.GPU_POD.gpus, cpus / manifests.GPU_POD.cpus)
    assert group["maxReplicas"] >= math.ceil(pods_needed - 1e-9) and group["maxReplicas"] >= 1
    assert group["minReplicas"] <= group["maxReplicas"]
    assert group["minReplicas"] * manifests.GPU_POD.gpus >= lo * gpus - 1e-9


# -- consumers outside Ray: Deployment + KEDA ----------------------------------------------------------


def _scaled_object(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "ScaledObject")


def test_scaled_object_takes_its_numbers_from_the_settings():
    s = manifests.k8s_settings()
    docs = yaml_docs(CONSUMERS_FILE)
    so = _scaled_object(docs)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert so["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "KEDA's HPA owns the replica count"
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == consumer_bounds(s)
    assert so["spec"]["maxReplicaCount"] <= s.kafka.input_partitions
    [trigger] = so["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["lagThreshold"] == str(s.worker.lag_per_consumer)
    assert meta["activationLagThreshold"] == str(s.worker.activation_lag)
    assert (meta["bootstrapServers"], meta["consumerGroup"]) == (s.kafka.bootstrap_servers, s.kafka.group_id)
    assert meta["allowIdleConsumers"] == "false" and meta["excludePersistentLag"] == "true"
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata values are strings"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["bash", "-c"] and container["command"][2].endswith("exec rerank-stream worker")
    assert "ray start --address=" in container["command"][2] and "--num-cpus=0" in container["command"][2]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > s.worker.scoring_timeout_s, "a stopping consumer must have time to finish its in-flight jobs"


@settings(max_examples=80, deadline=None)
@given(
    feeds=st.integers(1, 4),
    partitions=st.integers(1, 12),
    lo=st.integers(0, 10),
    extra=st.integers(0, 40),
    lag=st.integers(1, 10_000),
    activation=st.integers(0, 1000),
)
def test_never_more_consumers_than_partitions(feeds, partitions, lo, extra, lag, activation):
    feed_map = {f"f{i}": {"topic": f"t{i}", "instruction": "x"} for i in range(feeds)}
    s = _settings(
        RERANK_KAFKA_FEEDS=json.dumps(feed_map),
        RERANK_KAFKA_TOPIC_PARTITIONS=str(partitions),
        RERANK_WORKER_MIN_CONSUMERS=str(lo),
        RERANK_WORKER_MAX_CONSUMERS=str(max(lo + extra, 1)),
        RERANK_WORKER_LAG_PER_CONSUMER=str(lag),
        RERANK_WORKER_ACTIVATION_LAG=str(activation),
    )
    spec = _scaled_object(consumers(s))["spec"]
    assert 1 <= spec["maxReplicaCount"] <= feeds * partitions
    assert spec["maxReplicaCount"] <= max(lo + extra, 1)
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert {t["metadata"]["lagThreshold"] for t in spec["triggers"]} == {str(lag)}
    if spec["minReplicaCount"] == 0:  # from zero the topics are named, or nothing would wake the group
        assert {t["metadata"].get("topic") for t in spec["triggers"]} == {None, *(f"t{i}" for i in range(feeds))}
    else:
        assert len(spec["triggers"]) == 1


def test_kafka_security_maps_to_keda_and_secret_references():
    plain = consumers(_settings(RERANK_KAFKA_SECURITY_PROTOCOL="PLAINTEXT", RERANK_KAFKA_SASL_MECHANISM=""))
    assert [d["kind"] for d in plain] == ["Deployment", "ScaledObject"]
    meta = _scaled_object(plain)["spec"]["triggers"][0]["metadata"]
    assert "sasl" not in meta and "tls" not in meta
    env = {e["name"] for e in plain[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_var("kafka", "sasl_password") not in env and env_var("redis", "url") in env
    assert env_var("serve", "api_keys") not in env, "consumers need no HTTP API keys"

    scram = consumers(
        _settings(RERANK_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", RERANK_KAFKA_SASL_MECHANISM="SCRAM-SHA-256")
    )
    trigger = _scaled_object(scram)["spec"]["triggers"][0]
    assert trigger["metadata"]["sasl"] == "scram_sha256" and "tls" not in trigger["metadata"]
    auth = next(d for d in scram if d["kind"] == "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"username", "password"}

    with pytest.raises(ValueError, match=r"kafka.sasl_mechanism \(RERANK_KAFKA_SASL_MECHANISM\) = 'GSSAPI'"):
        consumers(_settings(RERANK_KAFKA_SASL_MECHANISM="GSSAPI"))
    with pytest.raises(ValueError, match="RERANK_WORKER_METRICS_PORT"):
        consumers(_settings(RERANK_WORKER_METRICS_PORT=""))


# -- every manifest: YAML, Kubernetes schemas, settings, secrets ----------------------------------------


def test_every_deploy_file_parses():
    files = sorted(p for p in (ROOT / "deploy").rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    assert len(files) >= 8, files
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert yaml_docs(path), f"{path} holds no YAML document"


def _pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "RayService":
        cluster = doc["spec"]["rayClusterConfig"]
        return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    if doc["kind"] == "Deployment":
        return [doc["spec"]["template"]]
    return []


def test_kubernetes_objects_and_ray_pod_templates_validate_strictly():
    """Core kinds against Kubernetes' own OpenAPI schemas; CRD pod templates as core PodTemplates."""
    docs = _k8s_docs()
    core = [d for d in docs if d["apiVersion"] in ("v1", "apps/v1")]
    assert {d["kind"] for d in core} == {"ConfigMap", "Deployment"}
    for doc in core:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    templates = [t for d in docs for t in _pod_templates(d)]
    assert len(templates) == 3  # head, GPU workers, consumers
    for i, template in enumerate(templates):
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": f"t{i}"}, "template": template}
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_kubernetes_validator_can_fail():
    broken = copy.deepcopy(next(d for d in _k8s_docs() if d["kind"] == "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["envFromm"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def env_names_set_by(docs: list[dict[str, Any]]) -> set[str]:
    """Every environment variable a set of Kubernetes documents sets: ConfigMap data and container env."""
    names: set[str] = set()
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            names |= set(doc.get("data") or {})
        names |= {entry["name"] for node in mappings(doc) for entry in env_entries(node)}
    return names


def test_every_variable_the_manifests_set_is_a_setting():
    names = env_names_set_by(_k8s_docs())
    assert {"KAFKA_BOOTSTRAP_SERVERS", "RERANK_MODEL_DEVICE", "RERANK_WORKER_WORKER_ID"} <= names
    assert unknown_settings(names) == []
    assert unknown_settings(names | {TYPO}) == [TYPO]


def test_secrets_are_referenced_never_inlined():
    docs = _k8s_docs()
    assert "Secret" not in {d["kind"] for d in docs}
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert not SECRET_VARS & set(config_map["data"]), "secrets belong in the Secret, not the ConfigMap"
    refs = [
        entry for doc in docs for node in mappings(doc) for entry in env_entries(node) if entry["name"] in SECRET_VARS
    ]
    for entry in refs:
        assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"] == manifests.SECRET, entry
    # Ray head + GPU workers: Redis URL, SASL user and password, API keys; consumers: all but the API keys
    assert len(refs) == 2 * 4 + 3


def test_kustomization_applies_every_manifest():
    kustomization = yaml_docs(ROOT / "deploy" / "k8s" / "kustomization.yaml")[0]
    others = sorted(p.name for p in (ROOT / "deploy" / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == others
