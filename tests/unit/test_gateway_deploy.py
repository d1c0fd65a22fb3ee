"""The gateway in docker-compose, Prometheus and Grafana: consistent with its settings and
metrics (the rules themselves are unit-tested by promtool in test_prometheus_rules.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from gateway.metrics import GatewayMetrics
from gateway.settings import ENV_PREFIX, GatewaySettings

ROOT = Path(__file__).resolve().parents[2]


def compose_gateway() -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][
        "gateway"
    ]
    return service


def test_compose_runs_the_gateway_with_real_settings() -> None:
    gateway = compose_gateway()
    assert gateway["entrypoint"] == ["health-gateway"]
    env = {str(k): str(v) for k, v in gateway["environment"].items()}
    fields = {ENV_PREFIX + f.upper() for f in GatewaySettings.model_fields}
    assert set(env) <= fields, f"unknown variables: {set(env) - fields}"
    assert env["GATEWAY_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["GATEWAY_HOST"] == "0.0.0.0"  # inside the container; published on loopback
    assert gateway["ports"] == [f"127.0.0.1:{env['GATEWAY_PORT']}:{env['GATEWAY_PORT']}"]
    assert gateway["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert f":{env['GATEWAY_PORT']}/readyz" in " ".join(gateway["healthcheck"]["test"])
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!gateway/" in dockerignore
    assert "COPY gateway/ gateway/" in (ROOT / "Dockerfile").read_text()


def test_prometheus_scrapes_the_gateway() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    port = compose_gateway()["environment"]["GATEWAY_PORT"]
    assert jobs["healthstream-gateway"]["static_configs"] == [{"targets": [f"gateway:{port}"]}]


def test_dashboard_has_a_gateway_row_charting_every_gateway_metric() -> None:
    board = json.loads(
        (ROOT / "deploy" / "grafana" / "dashboards" / "healthstream.json").read_text()
    )
    titles = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert "Ingest gateway" in titles
    text = json.dumps(board)
    names = {
        family.name
        for family in GatewayMetrics().registry.collect()
        if family.name != "health_gateway_build_info"
    }
    assert names, "no gateway metrics registered"
    for name in names:
        assert name in text, f"dashboard does not chart {name}"
