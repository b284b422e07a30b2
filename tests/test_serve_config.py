"""deploy/serve_config.yaml is what the app builder produces, valid for Serve, with strict keys."""

from __future__ import annotations

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from schemas.settings import ConfigError, Settings, load_settings
from serve_app.app import SERVE_CONFIG, autoscaling_config, check_autoscaling_keys, render_serve_config


def test_checked_in_serve_config_is_current():
    assert SERVE_CONFIG.read_text() == render_serve_config(), "run `python -m serve_app.app --write-config`"


def test_serve_config_validates_with_ray_schema():
    schema = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    app = schema.applications[0]
    assert app.import_path == "serve_app.app:app_builder"
    names = {d.name for d in app.deployments}
    assert names == {"Reranker", "RerankAPI"}
    reranker = next(d for d in app.deployments if d.name == "Reranker")
    assert reranker.max_ongoing_requests >= Settings().serve.max_batch_size


def test_autoscaling_keys_are_checked_strictly():
    cfg = autoscaling_config(Settings(model={"device": "cpu"}))
    check_autoscaling_keys(cfg)
    with pytest.raises(ValueError, match="upscale_delay"):
        check_autoscaling_keys({**cfg, "upscale_delay": 3})
    with pytest.raises(ValueError, match="policy keys"):
        check_autoscaling_keys({**cfg, "policy": {**cfg["policy"], "kwargs": {}}})


def test_batch_settings_are_consistent():
    with pytest.raises(ConfigError, match="max_ongoing_requests"):
        load_settings(environ={"RERANK_SERVE_MAX_BATCH_SIZE": "16", "RERANK_SERVE_MAX_ONGOING_REQUESTS": "4"})
    assert Settings(serve={"max_batch_size": 8}).serve.ongoing_requests == 32
