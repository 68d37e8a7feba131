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
export PYTHONPATH := $(CURDIR)/plugins

.PHONY: help install lint test test-faults demo bench lock clean

help:
	@echo "make demo    run the main job end to end in local mode (installs what it needs)"
	@echo "make test    lint, then the whole test suite (installs what it needs)"
	@echo "make lint    ruff and mypy"
	@echo "make bench   benchmarks against the seed baselines; saves bench/results/<name>.json"
	@echo "make lock    re-resolve constraints.txt from requirements.txt and include/pyproject.toml"
	@echo "make clean   remove local state (.lake, .state); keeps .venv"

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt include/pyproject.toml tests/requirements.txt constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip install --python $(BIN)/python --quiet \
		-c constraints.txt -r requirements.txt -r tests/requirements.txt -e ./include
	@touch $@

lock: $(VENV)/.installed
	$(BIN)/uv pip compile --python-version 3.11 --quiet --no-header --annotation-style line \
		requirements.txt tests/requirements.txt include/pyproject.toml -o constraints.txt

LINTED := $(wildcard dags plugins include tests bench)

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -m "not faults" tests

test-faults: install
	$(BIN)/python -m pytest -m faults tests

demo: install
	$(BIN)/python -m mlsteps.demo

bench: install
	$(BIN)/python -m bench.run

clean:
	rm -rf .lake .state
