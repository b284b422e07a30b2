"""Builds the Serve application from settings: ``Reranker`` replicas behind the ``RerankAPI`` ingress.

One function turns settings into deployment options, so ``serve.run`` (runtime.py), ``serve build``
/ ``serve run serve_app.app:app_builder`` and the checked-in ``deploy/serve_config.yaml`` all
agree. ``python -m serve_app.app --write-config`` regenerates that file; a test fails on drift.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from ray import serve
from ray.serve.config import AutoscalingConfig

from schemas.settings import DEFAULT_MODEL, REVEAL_SECRETS, Settings, load_settings

SERVE_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "serve_config.yaml"
POLICY = "serve_app.autoscaling:QueueDepthLagPolicy"
API_DEPLOYMENT = "RerankAPI"


def _num_gpus(settings: Settings, key: str = DEFAULT_MODEL) -> float:
    extra = settings.model.extra_models.get(key)
    if extra is not None and extra.num_gpus is not None:
        return extra.num_gpus
    if settings.serve.num_gpus is not None:
        return settings.serve.num_gpus
    device = settings.model.spec(key).device
    if device.startswith("cuda"):
        return 1.0
    if device == "auto":
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    return 0.0


def _replicas(settings: Settings, key: str) -> tuple[int, int, int]:
    """(min, max, initial) replicas of a model's deployment: its own settings, else serve.*."""
    s, extra = settings.serve, settings.model.extra_models.get(key)
    low = extra.min_replicas if extra is not None and extra.min_replicas is not None else s.min_replicas
    high = extra.max_replicas if extra is not None and extra.max_replicas is not None else s.max_replicas
    start = extra.initial_replicas if extra is not None and extra.initial_replicas is not None else s.initial_replicas
    high = max(high, low)
    return low, high, min(max(low, start if start is not None else low), high)


def autoscaling_config(settings: Settings, key: str = DEFAULT_MODEL) -> dict[str, Any]:
    """Serve's autoscaling_config of a model's Reranker; every key is checked against AutoscalingConfig.

    The Kafka lag it scales on is that of the feeds whose jobs default to this model."""
    s = settings.serve
    low, high, start = _replicas(settings, key)
    topics = [f.topic for name, f in settings.kafka.feeds.items() if settings.feed_model(name) == key]
    cfg: dict[str, Any] = {
        "min_replicas": low,
        "max_replicas": high,
        "initial_replicas": start,
        "target_ongoing_requests": s.target_ongoing_requests,
        "upscale_delay_s": s.upscale_delay_s,
        "downscale_delay_s": s.downscale_delay_s,
        "metrics_interval_s": s.metrics_interval_s,
        "look_back_period_s": s.look_back_period_s,
        "policy": {
            "policy_function": POLICY,
            "policy_kwargs": {
                "kafka": _lag_connection(settings) if s.scale_on_kafka_lag and topics else None,
                "group_id": settings.kafka.group_id,
                "topics": topics,
                "lag_per_replica": s.lag_per_replica,
                "poll_interval_s": s.lag_poll_interval_s,
            },
        },
    }
    check_autoscaling_keys(cfg)
    return cfg


def check_autoscaling_keys(cfg: dict[str, Any]) -> None:
    """Ray silently ignores unknown autoscaling keys; a typo must be an error instead."""
    unknown = sorted(set(cfg) - set(AutoscalingConfig.model_fields))
    if unknown:
        raise ValueError(f"unknown autoscaling_config keys {unknown}; valid: {sorted(AutoscalingConfig.model_fields)}")
    policy_unknown = sorted(set(cfg.get("policy") or {}) - {"policy_function", "policy_kwargs"})
    if policy_unknown:
        raise ValueError(f"unknown autoscaling policy keys {policy_unknown}")


def _lag_connection(settings: Settings) -> dict[str, Any]:
    """Broker connection of the lag source; secrets stay out (the controller reads them from its env)."""
    return settings.kafka.model_dump(
        mode="json",
        include={"bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username", "ssl_cafile"},
    )


def reranker_options(settings: Settings, key: str = DEFAULT_MODEL) -> dict[str, Any]:
    """Deployment options of a model's Reranker (one replica = one copy of that model on one device)."""
    s, extra = settings.serve, settings.model.extra_models.get(key)
    num_cpus = extra.num_cpus if extra is not None and extra.num_cpus is not None else s.num_cpus
    return {
        "name": settings.reranker_deployment(key),
        "ray_actor_options": {"num_cpus": num_cpus, "num_gpus": _num_gpus(settings, key)},
        "max_ongoing_requests": s.ongoing_requests,
        "max_queued_requests": s.max_queued_requests,
        "autoscaling_config": autoscaling_config(settings, key),
        "backpressure_config": {"status_code": 503, "retry_after_s": 1},
        "max_constructor_retry_count": 3,  # a model that cannot load fails the deploy fast
        "health_check_period_s": 10,
    }


def api_options(settings: Settings) -> dict[str, Any]:
    """The ingress is light (no model): never the bottleneck, so it gets generous limits."""
    return {
        "name": API_DEPLOYMENT,
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": 0},
        "max_ongoing_requests": max(64, 4 * settings.serve.ongoing_requests),
        # Overload is refused at the Reranker's queue (its max_queued_requests), where the API
        # answers 503 with a JSON reason; the ingress itself queues what it cannot start yet.
        "max_queued_requests": -1,
    }


def build_app(settings: Settings):
    """The application object given to ``serve.run``."""
    from serve_app.deployment import Reranker
    from serve_app.http_api import RerankAPI

    settings_json = settings.model_dump_json(context=REVEAL_SECRETS)  # the ingress needs serve.api_keys
    rerankers = {  # one deployment per model, each with its own replicas
        key: serve.deployment(Reranker).options(**reranker_options(settings, key)).bind(settings_json, key)  # type: ignore[attr-defined]
        for key in settings.model.keys
    }
    default = rerankers.pop(DEFAULT_MODEL)
    return RerankAPI.options(**api_options(settings)).bind(default, settings_json, rerankers)  # type: ignore[attr-defined]


def app_builder(args: dict[str, str]):
    """Entry point of ``serve run`` / ``serve build``: ``serve run serve_app.app:app_builder config=x.yaml``."""
    return build_app(load_settings(args.get("config")))


def serve_config(settings: Settings) -> dict[str, Any]:
    """The ServeDeploySchema document of this app (what deploy/serve_config.yaml holds)."""
    s = settings.serve
    rerankers = [reranker_options(settings, key) for key in settings.model.keys]
    for reranker in rerankers:
        kwargs = reranker["autoscaling_config"]["policy"]["policy_kwargs"]
        if kwargs["kafka"] is not None:
            kwargs["kafka"] = {}  # {} = broker connection from the Ray nodes' environment, not this machine's
    deployments = [*rerankers, api_options(settings)]
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": s.http_port},
        "applications": [
            {
                "name": s.app_name,
                "route_prefix": s.route_prefix,
                "import_path": "serve_app.app:app_builder",
                "args": {},
                "deployments": deployments,
            }
        ],
    }


def render_serve_config(settings: Settings | None = None) -> str:
    head = (
        "# Generated by `python -m serve_app.app --write-config` from the default settings; do not edit.\n"
        "# Deploy: `serve deploy deploy/serve_config.yaml` (or KubeRay serveConfigV2). Model and Kafka\n"
        "# settings come from the environment of the Ray nodes (RERANK_MODEL, KAFKA_BOOTSTRAP_SERVERS, ...).\n"
    )
    cfg = serve_config(settings or Settings.model_validate({"model": {"device": "cpu"}}))
    return head + yaml.safe_dump(cfg, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-config", action="store_true", help=f"Write {SERVE_CONFIG}.")
    args = parser.parse_args(argv)
    text = render_serve_config()
    if args.write_config:
        SERVE_CONFIG.write_text(text)
        print(f"wrote {SERVE_CONFIG}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
