# Two commands matter: `make demo` (the main job on the embedded default) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(abspath $(VENV))/bin
UV_VERSION := 0.13.9
STATE := $(CURDIR)/.state

# Local mode: everything on this machine, no Docker, no Kubernetes.
export ML_EXECUTION_MODE ?= local
export ML_LAKE_URI ?= $(CURDIR)/.lake
export ML_STATE_DIR ?= $(STATE)
export MLFLOW_TRACKING_URI ?= sqlite:///$(STATE)/mlflow.db
export AIRFLOW_HOME ?= $(STATE)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/include

.PHONY: help install lint test test-faults demo ui bench lock clean chromium test-k8s test-containers

help:
	@echo "make demo    run the main job end to end in local mode (installs what it needs)"
	@echo "make test    lint, then the whole test suite (installs what it needs, Chromium included)"
	@echo "make ui      the Airflow UI (and MLflow UI) over the demo's state, on 127.0.0.1:8080"
	@echo "make lint    ruff and mypy"
	@echo "make bench   benchmarks against the seed baselines; saves bench/results/<name>.json"
	@echo "make lock    re-resolve constraints.txt from requirements.txt and include/pyproject.toml"
	@echo "make clean   remove local state (.lake, .state); keeps .venv"

install: $(VENV)/.installed

# Bytecode is compiled once here: every step, task and service is a fresh Python process, and
# where PYTHONDONTWRITEBYTECODE is set (as in CI) none would ever write a .pyc, so each would compile
# its imports again (Airflow, MLflow, Feast: seconds of CPU per process).
$(VENV)/.installed: requirements.txt include/pyproject.toml tests/requirements.txt tests/requirements-data.txt constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode \
		-c constraints.txt -r requirements.txt -r tests/requirements.txt -e ./include
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode --no-deps -r tests/requirements-data.txt
	@touch $@

lock: $(VENV)/.installed
	$(BIN)/uv pip compile --python-version 3.11 --quiet --no-header --annotation-style line \
		requirements.txt tests/requirements.txt include/pyproject.toml -o constraints.txt

LINTED := $(wildcard dags plugins include tests bench)

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

test: lint chromium
	$(BIN)/python -m pytest -m "not faults and not containers and not k8s" -rfEs --durations=30 tests

# The browser test drives Debian's chromium package. Install it when missing and we may (root or
# passwordless sudo); otherwise say so: tests/ui then skips with the same message.
chromium:
	@if [ -n "$$ML_CHROMIUM" ] || command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "NOTE: chromium is missing and cannot be installed without root: the browser test will be SKIPPED"; exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser test (apt-get)"; \
		($$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
			|| echo "NOTE: apt-get could not install chromium: the browser test will be SKIPPED"; \
	else echo "NOTE: no apt-get to install chromium: the browser test will be SKIPPED (or set ML_CHROMIUM)"; fi

test-faults: install
	$(BIN)/python -m pytest -m faults --durations=15 tests

# A real single-node Kubernetes cluster (needs root): builds the Kubernetes binaries and helm once
# (cached outside the repository) and the images through tests/containers, then runs tests/k8s.
test-k8s: install
	@if [ "$$(id -u)" = 0 ] && command -v go >/dev/null 2>&1; then bash tests/k8s/build_binaries.sh >/dev/null; fi
	$(BIN)/python -m pytest -m k8s -rfEs --durations=15 tests/k8s

# Images built from docker/ and run as pods run them, then the compose stack (needs a Docker engine:
# installed and started when missing and we are root; otherwise the tests skip saying why).
test-containers: install
	$(BIN)/python -m pytest -m containers -rfEs --durations=15 tests/containers

demo: install
	$(BIN)/python -m repotools.demo

ui: install
	$(BIN)/python -m repotools.local_airflow --port $${ML_UI_PORT:-8080}

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf .lake .state
