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

.PHONY: install test demo services-start services-stop services-status bench-engine bench-serve bench-pipeline load-smoke perf-docs clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

test: install
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

load-smoke: install
	deploy/local/with-services.sh $(PY) -m load_tests.run --profile smoke

perf-docs: install
	$(PY) -m load_tests.perf_docs

clean:
	deploy/local/services.sh stop || true
	rm -rf .run
