"""The Docker assets checked with the tools Docker users' own tooling relies on.

No Docker daemon here, so nothing is built or started: docker-compose.yml is loaded by
compose-go (the loader inside Docker Compose, via tools/compose-validate) and the
Dockerfile is linted by hadolint. Each check also gets a broken input it must reject, so
a silently passing tool cannot make the test pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE_VALIDATE = ROOT / ".cache" / "compose-validate"


@pytest.fixture(scope="module")
def compose_validate() -> Path:
    """Built by `make compose-validate` (a no-op when up to date; `make test` runs it first)."""
    built = subprocess.run(
        ["make", "-s", "compose-validate"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert COMPOSE_VALIDATE.is_file()
    return COMPOSE_VALIDATE


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_compose_go_loads_the_compose_file(compose_validate: Path) -> None:
    result = run(compose_validate, ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "valid: 9 services (consumer, gateway, grafana, kafka, migrate, mysql, prometheus, "
        "redis, simulator)"
    )


def _broken_copy(tmp_path: Path, edit: str) -> Path:
    """docker-compose.yml with one mistake, in a folder of its own (same relative paths)."""
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = data["services"]
    if edit == "undefined-dependency":
        services["consumer"]["depends_on"]["kafak"] = {"condition": "service_healthy"}
    elif edit == "unknown-key":
        services["redis"]["healthchek"] = services["redis"].pop("healthcheck")
    elif edit == "bad-port":
        services["redis"]["ports"] = ["127.0.0.1:6379:not-a-port"]
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("undefined-dependency", 'service "consumer" depends on undefined service "kafak"'),
        ("unknown-key", "healthchek"),
        ("bad-port", "not-a-port"),
    ],
)
def test_compose_go_rejects_a_broken_compose_file(
    compose_validate: Path, tmp_path: Path, edit: str, message: str
) -> None:
    result = run(compose_validate, _broken_copy(tmp_path, edit))
    assert result.returncode == 1
    assert result.stdout == ""
    assert message in result.stderr


def test_hadolint_passes_the_dockerfile() -> None:
    result = run(BIN / "hadolint", "--config", ROOT / ".hadolint.yaml", ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install curl\nUSER app\nCMD run\n"
    )
    result = run(BIN / "hadolint", "--config", ROOT / ".hadolint.yaml", bad)
    assert result.returncode == 1
    for rule in ("DL3007", "DL3008", "DL3015", "DL3066", "DL3025"):
        assert rule in result.stdout, rule


def test_yamllint_passes_the_compose_file() -> None:
    result = run(
        BIN / "yamllint",
        "--strict",
        "-c",
        ROOT / ".yamllint.yaml",
        ROOT / "docker-compose.yml",
        ROOT / ".yamllint.yaml",
        ROOT / ".hadolint.yaml",
    )
    assert result.returncode == 0, result.stdout
