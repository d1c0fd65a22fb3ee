# healthstream: every entry point a developer, CI or an operator needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export KAFKA_BOOTSTRAP_SERVERS ?= 127.0.0.1:9092
export DATABASE_URL ?= mysql+pymysql://root@127.0.0.1:3306/health
export REDIS_URL ?= redis://127.0.0.1:6379/0

# compose-validate: compose-go (Docker Compose's own loader) in a tiny Go program. The Go
# toolchain is the machine's; modules come from the Go module proxy on the first build.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
COMPOSE_VALIDATE := .cache/compose-validate
COMPOSE_VALIDATE_SRC := $(wildcard tools/compose-validate/*.go) \
	tools/compose-validate/go.mod tools/compose-validate/go.sum

.PHONY: help venv tools services services-down services-status migrate lint typecheck \
	unit integration test demo bench gateway chaos clean compose-validate validate-deploy

help:
	@echo "make demo      - stack up, migrate, 2 replicas + simulator, print a summary"
	@echo "make test      - venv, lint, typecheck, services, unit + integration tests"
	@echo "make bench     - throughput and latency benchmarks (JSON in bench/results/)"
	@echo "make validate-deploy - lint/validate Dockerfile, docker-compose.yml, deploy/k8s"
	@echo "make gateway   - run the ingest gateway (health-gateway) against the local stack"
	@echo "make chaos     - faults + invariants on a private stack (PROFILE=short|long, SEED=n)"
	@echo "make services | services-down | services-status"

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# promtool/prometheus (Debian packages) for the alert-rule and scrape tests, wrk for the
# gateway benchmark.
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
	$(BIN)/ruff check consumer schemas gateway common tests bench scripts
	$(BIN)/ruff format --check consumer schemas gateway common tests bench scripts

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q

integration: venv services
	$(BIN)/pytest tests/integration -q

compose-validate: $(COMPOSE_VALIDATE)
$(COMPOSE_VALIDATE): $(COMPOSE_VALIDATE_SRC)
	mkdir -p $(@D)
	cd tools/compose-validate && $(GO) mod download && $(GO) build -o $(CURDIR)/$@ .

# Docker and Kubernetes assets only (no services needed); also part of `make test`.
validate-deploy: venv compose-validate
	$(BIN)/pytest tests/unit/test_docker_assets.py tests/unit/test_k8s_manifests.py -q

# The README's test command: everything CI runs.
test: venv tools lint typecheck compose-validate services
	$(BIN)/pytest tests bench/test_bench.py -q --durations=15

demo: venv services
	$(BIN)/python scripts/demo.py

bench: venv tools services
	$(BIN)/python bench/run.py

gateway: venv services
	$(BIN)/health-gateway

# Fault injection on its own stack (other ports, .runtime/chaos): never the shared one.
# PROFILE=long|short, SEED=<n> replays a run, CHAOS_ARGS for more (e.g. --no-crafted).
PROFILE ?= long
chaos: venv
	$(BIN)/python -m consumer.tools.chaos --profile $(PROFILE) $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
