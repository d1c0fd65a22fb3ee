# healthstream: every entry point a developer, CI or an operator needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:9092
export DATABASE_URL ?= mysql+pymysql://root@127.0.0.1:3306/health
export REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: help venv tools services services-down services-status migrate lint typecheck \
	unit integration test demo bench chaos clean

help:
	@echo "make demo      - stack up, migrate, 2 replicas + simulator, print a summary"
	@echo "make test      - venv, lint, typecheck, services, unit + integration tests"
	@echo "make bench     - throughput and latency benchmarks (JSON in bench/results/)"
	@echo "make chaos     - faults + invariants on a private stack (PROFILE=short|long, SEED=n)"
	@echo "make services | services-down | services-status"

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# promtool/prometheus (Debian package) for the alert-rule and scrape tests.
tools:
	scripts/install-tools.sh

services:
	scripts/services.sh up

services-down:
	scripts/services.sh down

services-status:
	scripts/services.sh status

migrate: venv services
	$(BIN)/health-consumer migrate

lint: venv
	$(BIN)/ruff check consumer schemas tests bench scripts
	$(BIN)/ruff format --check consumer schemas tests bench scripts

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q

integration: venv services
	$(BIN)/pytest tests/integration -q

# The README's test command: everything CI runs.
test: venv tools lint typecheck services
	$(BIN)/pytest tests -q --durations=15

demo: venv services
	$(BIN)/python scripts/demo.py

bench: venv services
	$(BIN)/python bench/run.py

# Fault injection on its own stack (other ports, .runtime/chaos): never the shared one.
# PROFILE=long|short, SEED=<n> replays a run, CHAOS_ARGS for more (e.g. --no-crafted).
PROFILE ?= long
chaos: venv
	$(BIN)/python -m consumer.tools.chaos --profile $(PROFILE) $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
