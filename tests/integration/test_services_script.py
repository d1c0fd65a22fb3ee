"""scripts/services.sh against the running local stack.

The Makefile runs `scripts/services.sh up` before the integration tests; these tests
never stop the shared services, except MariaDB for a few seconds in the restart test
(the consumer's fault-injection tests rely on exactly that restart keeping the data).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pymysql
import pytest
import redis
from confluent_kafka.admin import AdminClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services.sh"
RUNTIME_DIR = Path(os.environ.get("HEALTHSTREAM_RUNTIME_DIR", ROOT / ".runtime")).resolve()
SERVICES = ("mariadb", "redis", "kafka")
ENDPOINTS = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
    "DATABASE_URL": "mysql+pymysql://root@127.0.0.1:3306/health",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def services_sh(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )


def status_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        cols = line.split()
        if cols and cols[0] in SERVICES:
            rows[cols[0]] = cols
    return rows


def mysql_connect(database: str | None = "health") -> pymysql.connections.Connection:
    return pymysql.connect(
        host="127.0.0.1",
        port=3306,
        user="root",
        password="",
        database=database,
        connect_timeout=5,
        autocommit=True,
    )


def test_up_again_is_a_quick_no_op() -> None:
    started = time.monotonic()
    result = services_sh("up", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 20, f"second `up` took {elapsed:.1f}s"
    for svc in SERVICES:
        assert f"{svc} already up" in result.stdout, result.stdout
    assert "starting" not in result.stdout
    for name, value in ENDPOINTS.items():
        assert f"export {name}={value}" in result.stdout


def test_status_shows_everything_up() -> None:
    result = services_sh("status", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert str(RUNTIME_DIR) in result.stdout
    rows = status_rows(result.stdout)
    assert set(rows) == set(SERVICES), result.stdout
    ports = {"mariadb": "127.0.0.1:3306", "redis": "127.0.0.1:6379", "kafka": "127.0.0.1:9092"}
    for svc, cols in rows.items():
        assert cols[1] == "up", result.stdout
        assert ports[svc] in cols, result.stdout
        assert cols[-1].endswith(".log"), result.stdout


def test_unknown_service_is_rejected() -> None:
    result = services_sh("up", "postgres", timeout=30)
    assert result.returncode != 0
    assert "unknown service" in result.stderr


def test_kafka_serves_metadata() -> None:
    admin = AdminClient({"bootstrap.servers": ENDPOINTS["KAFKA_BOOTSTRAP_SERVERS"]})
    metadata = admin.list_topics(timeout=10)
    assert metadata.brokers, "no broker in the cluster metadata"


def test_mariadb_answers_over_tcp() -> None:
    conn = mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1, DATABASE(), @@character_set_database")
            assert cur.fetchone() == (1, "health", "utf8mb4")
    finally:
        conn.close()


def test_redis_answers() -> None:
    client = redis.Redis.from_url(ENDPOINTS["REDIS_URL"], socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_mariadb_restart_keeps_data() -> None:
    """`down mariadb` + `up mariadb` (as the fault-injection tests do) keeps the data."""
    scratch = f"services_test_{uuid.uuid4().hex[:8]}"
    conn = mysql_connect(None)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{scratch}`")
            cur.execute(f"CREATE TABLE `{scratch}`.t (id INT PRIMARY KEY, v VARCHAR(20))")
            cur.execute(f"INSERT INTO `{scratch}`.t VALUES (1, 'survives')")
    finally:
        conn.close()

    try:
        started = time.monotonic()
        down = services_sh("down", "mariadb", timeout=90)
        assert down.returncode == 0, down.stderr
        if "left alone" not in down.stdout:  # a MariaDB we did not start is not stopped
            assert "mariadb stopped" in down.stdout, down.stdout
            with pytest.raises(pymysql.err.OperationalError):
                mysql_connect(None).close()
        up = services_sh("up", "mariadb", timeout=90)
        assert up.returncode == 0, up.stderr
        assert time.monotonic() - started < 60

        conn = mysql_connect(None)
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT v FROM `{scratch}`.t WHERE id = 1")
                assert cur.fetchone() == ("survives",)
        finally:
            conn.close()
    finally:
        # Leave the shared stack as we found it, even if an assertion failed.
        services_sh("up", "mariadb", timeout=90)
        conn = mysql_connect(None)
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{scratch}`")
        finally:
            conn.close()
