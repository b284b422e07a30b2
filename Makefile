# The README's two commands: `make demo` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# deploy/local uses the venv's kafka-python for its readiness check.
export PYTHON := $(abspath $(PY))
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
PYTEST_ARGS ?=

.PHONY: install lock lint test demo manifests services-start services-stop services-status bench-engine bench-peers bench-serve bench-pipeline bench-priority bench-codecs load-smoke perf-docs chaos clean

install: $(VENV)/.installed

# Installs exactly the pinned versions of requirements.lock (compiled by `make lock` with uv from
# pyproject.toml), then the project itself without resolving anything again.
$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

lock: install
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --no-header --quiet -o requirements.lock

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The playground's browser test drives Debian's chromium: installed with apt-get when missing.
test: install lint
	deploy/local/tools.sh ensure-chromium >/dev/null
	deploy/local/with-services.sh $(PY) -m pytest $(PYTEST_ARGS)

demo: install
	deploy/local/with-services.sh $(VENV)/bin/rerank-stream demo

services-start:
	deploy/local/services.sh start

services-stop:
	deploy/local/services.sh stop

services-status:
	deploy/local/services.sh status

bench-engine: install
	$(PY) -m load_tests.bench_engine --quick --save

bench-serve: install
	deploy/local/with-services.sh $(PY) -m load_tests.bench_serve --quick --save

bench-pipeline: install
	deploy/local/with-services.sh $(PY) -m load_tests.bench_pipeline --quick --save

# The peers are an optional extra: installed here, pinned to requirements.lock where the lock has them.
bench-peers: install
	$(PY) -m pip install -q -c requirements.lock -e '.[peers]'
	$(PY) -m load_tests.bench_peers --quick --save

bench-priority: install
	deploy/local/with-services.sh $(PY) -m load_tests.bench_priority --quick --save

bench-codecs: install
	deploy/local/with-services.sh $(PY) -m load_tests.bench_codecs --save

load-smoke: install
	deploy/local/with-services.sh $(PY) -m load_tests.run --profile smoke

perf-docs: install
	$(PY) -m load_tests.perf_docs

# Fault schedule on the cluster mode (its own 3 brokers, Redis and multi-node Ray; ~8 min): timeline plot
# and JSON in load_tests/results/chaos-*, last line = one JSON object with lost (must be 0) and the gaps.
chaos: install
	$(PY) -m load_tests.chaos

# Regenerates deploy/serve_config.yaml, deploy/k8s/rayservice.yaml, consumers.yaml and the Grafana dashboard
# (from deploy/k8s/config.yaml and the settings); a test fails when a committed one is stale.
manifests: install
	$(PY) -m deploy.generate

clean:
	deploy/local/services.sh stop || true
	rm -rf .run
