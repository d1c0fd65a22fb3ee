"""docker-compose.yml and Dockerfile stay consistent with the code and the local stack.

Docker cannot run in CI here, so these checks read the files: the services exist, the
consumer runs as 2 replicas, every container running `health-consumer` gets the same
environment, whose names are real Settings fields and whose hosts are compose services.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from consumer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

EXPECTED_SERVICES = {
    "kafka",
    "mysql",
    "redis",
    "migrate",
    "consumer",
    "simulator",
    "prometheus",
    "grafana",
}
APP_SERVICES = ("migrate", "consumer", "simulator")
EXPECTED_ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    "KAFKA_TOPIC": "health-data",
    "KAFKA_GROUP_ID": "health-data-consumers",
    "DLQ_TOPIC": "health-data.dlq",
    "DATABASE_URL": "mysql+pymysql://root@mysql:3306/health",
    "REDIS_URL": "redis://redis:6379/0",
    "HTTP_HOST": "0.0.0.0",
    "HTTP_PORT": "8000",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svcs = compose["services"]
    assert isinstance(svcs, dict)
    return svcs


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the "- NAME=value" form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _dockerfile_instructions() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        found.setdefault(word.upper(), []).append(rest.strip())
    return found


def test_all_services_defined(services: dict[str, Any]) -> None:
    assert services.keys() >= EXPECTED_SERVICES


def test_images(services: dict[str, Any]) -> None:
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["mysql"]["image"] == "mysql:8.4"
    assert services["redis"]["image"].startswith("redis:7")
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")


def test_consumer_runs_two_replicas_from_the_dockerfile(services: dict[str, Any]) -> None:
    consumer = services["consumer"]
    assert consumer["deploy"]["replicas"] == 2
    assert consumer["build"]["context"] == "."
    assert consumer["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    assert consumer["command"] == ["run"]
    # Replicas cannot share a published host port.
    assert "ports" not in consumer


def test_app_commands(services: dict[str, Any]) -> None:
    assert services["migrate"]["command"] == ["migrate"]
    sim = services["simulator"]["command"]
    assert sim[0] == "simulate"
    args = dict(zip(sim[1::2], sim[2::2], strict=True))
    assert args == {"--devices": "500", "--rate": "2000", "--duration": "600"}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_environment_is_the_shared_one(services: dict[str, Any], name: str) -> None:
    env = _env(services[name])
    for key, value in EXPECTED_ENV.items():
        assert env.get(key) == value, f"{name}: {key}"


def test_app_env_names_are_settings_fields(services: dict[str, Any]) -> None:
    fields = {f.upper() for f in Settings.model_fields}
    for name in APP_SERVICES:
        unknown = {k for k in _env(services[name]) if k not in fields}
        assert not unknown, f"{name} sets variables Settings does not read: {unknown}"


def test_app_endpoints_point_at_compose_services(services: dict[str, Any]) -> None:
    env = _env(services["consumer"])
    kafka_host, kafka_port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert kafka_host in services
    advertised = _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//{kafka_host}:{kafka_port}" in advertised

    db = urlsplit(env["DATABASE_URL"])
    assert db.hostname in services and db.port == 3306
    mysql_env = _env(services["mysql"])
    assert db.path.lstrip("/") == mysql_env["MYSQL_DATABASE"]
    # No password in the URL <=> MySQL allows root without one.
    assert db.username == "root"
    if db.password is None:
        assert mysql_env.get("MYSQL_ALLOW_EMPTY_PASSWORD", "").lower() in {"yes", "true", "1"}
    else:
        assert mysql_env.get("MYSQL_ROOT_PASSWORD") == db.password

    redis = urlsplit(env["REDIS_URL"])
    assert redis.hostname in services and redis.port == 6379


def test_host_ports_match_the_local_stack(services: dict[str, Any]) -> None:
    """Host tools use the same endpoints as with scripts/services.sh."""
    published = {
        name: [str(p) for p in services[name].get("ports", [])]
        for name in ("kafka", "mysql", "redis")
    }
    assert any(p.endswith(":9092:29092") for p in published["kafka"])
    assert "HOST://127.0.0.1:9092" in _env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert any(p.endswith(":3306:3306") for p in published["mysql"])
    assert any(p.endswith(":6379:6379") for p in published["redis"])


def test_kafka_is_a_single_kraft_node(services: dict[str, Any]) -> None:
    env = _env(services["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])


def test_healthchecks_and_start_order(services: dict[str, Any]) -> None:
    for name in ("kafka", "mysql", "redis", "consumer"):
        assert "healthcheck" in services[name], name
    migrate_deps = services["migrate"]["depends_on"]
    assert migrate_deps["mysql"]["condition"] == "service_healthy"
    deps = services["consumer"]["depends_on"]
    for name in ("kafka", "mysql", "redis"):
        assert deps[name]["condition"] == "service_healthy"
    assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert services["simulator"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    # The consumer healthcheck probes the sidecar on HTTP_PORT.
    probe = " ".join(services["consumer"]["healthcheck"]["test"])
    assert f":{EXPECTED_ENV['HTTP_PORT']}/readyz" in probe


def test_observability_mounts_exist(services: dict[str, Any]) -> None:
    mounts = [*services["prometheus"]["volumes"], *services["grafana"]["volumes"]]
    sources = {m.split(":")[0] for m in mounts}
    assert sources == {
        "./deploy/prometheus",
        "./deploy/grafana/provisioning",
        "./deploy/grafana/dashboards",
    }
    for source in sources:
        assert (ROOT / source).is_dir(), source


def test_dockerfile() -> None:
    instructions = _dockerfile_instructions()
    assert instructions["FROM"] == ["python:3.11-slim"]
    assert instructions["ENTRYPOINT"] == ['["health-consumer"]']
    assert instructions["CMD"] == ['["run"]']
    assert instructions["EXPOSE"] == [EXPECTED_ENV["HTTP_PORT"]]
    assert any("pip install ." in run for run in instructions["RUN"])
    users = instructions["USER"]
    assert users and users[-1] not in {"root", "0"}


def test_dockerignore_keeps_local_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    # Allow-list style: everything is ignored except the package sources.
    assert "*" in lines
    assert {"!pyproject.toml", "!consumer/", "!schemas/"} <= set(lines)


def _compose_plugin() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30
    )
    return docker if probe.returncode == 0 else None


# `docker compose config` validates against the compose spec; only where the plugin exists
# (the dev box and CI have the docker CLI without it).
if _compose_plugin() is not None:

    def test_docker_compose_config_validates() -> None:
        docker = _compose_plugin()
        assert docker is not None
        result = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr
