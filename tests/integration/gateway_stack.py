"""Helpers for the gateway's integration tests: `health-gateway` as a real process, and a
private single-node Kafka the tests may stop and restart (never the shared one on 9092).

The private broker runs from the same jars as scripts/services.sh (.cache/kafka-libs,
fetched by `kafka_fetch_libs` from scripts/lib/kafka.sh when missing), with its own
ports, storage and logs in a temporary folder.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.stack import LOG_DIR, ROOT, free_port

KAFKA_LIBS = Path(os.environ.get("HEALTHSTREAM_KAFKA_LIBS", ROOT / ".cache" / "kafka-libs"))
TEMPLATE = ROOT / "scripts" / "kafka" / "server.properties.template"
LOG4J = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


def ensure_kafka_libs(workdir: Path) -> Path:
    """The broker jars, fetched the way scripts/services.sh does when they are missing."""
    script = "set -e; source scripts/lib/common.sh; source scripts/lib/kafka.sh; kafka_fetch_libs"
    env = {
        **os.environ,
        "REPO_ROOT": str(ROOT),
        "HEALTHSTREAM_RUNTIME_DIR": str(workdir / "fetch"),
        "LOG_PREFIX": "private-kafka",
    }
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0 or not list(KAFKA_LIBS.glob("kafka_2.13-*.jar")):
        pytest.fail(f"cannot get the Kafka jars into {KAFKA_LIBS}:\n{done.stdout}{done.stderr}")
    return KAFKA_LIBS


@dataclass
class PrivateKafka:
    """A KRaft broker+controller of our own: start, kill -9, restart on the same storage."""

    workdir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "kafka.log"

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{KAFKA_LIBS}/*",
            *args,
        ]

    def prepare(self) -> None:
        ensure_kafka_libs(self.workdir)
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        config = (
            TEMPLATE.read_text()
            .replace("@KAFKA_DIR@", str(self.workdir))
            .replace("@KAFKA_PORT@", str(self.port))
            .replace("@CONTROLLER_PORT@", str(self.controller_port))
        )
        (self.workdir / "server.properties").write_text(config)
        (self.workdir / "log4j2.properties").write_text(LOG4J.format(log=self.log))
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # `--cluster-id=ID`, not `-t ID`: an id starting with '-' reads as an option.
        cmd = self._java(
            "kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={cluster_id}",
            "-c", str(self.workdir / "server.properties"),
        )  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            pytest.fail(f"formatting the private Kafka storage failed:\n{done.stdout}{done.stderr}")

    def start(self, timeout: float = 180.0) -> PrivateKafka:
        out = open(self.workdir / "kafka.out", "ab")  # noqa: SIM115 - the child owns it
        cmd = self._java("kafka.Kafka", str(self.workdir / "server.properties"))
        cmd[1:1] = ["-Xms256m", "-Xmx512m", "-XX:+UseSerialGC"]
        self.proc = subprocess.Popen(
            cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
        )
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"private Kafka exited {self.proc.returncode}; see {self.log}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    return self
            except KafkaException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"private Kafka not ready after {timeout}s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: the harshest stop; what the broker acked must survive it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def freeze(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def create_topic(self, name: str, partitions: int = 12) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
            name
        ].result(60)


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    """Every message of `topic` from the start (at least `expected`, then a short linger)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(500, timeout=0.5) if m.error() is None)
        linger = time.monotonic() + 1.0
        while time.monotonic() < linger:
            out.extend(m for m in consumer.consume(500, timeout=0.2) if m.error() is None)
    finally:
        consumer.close()
    return out


def _lower(items: Any) -> dict[str, str]:
    """Header names lower-cased (HTTP header names are case-insensitive)."""
    return {str(k).lower(): str(v) for k, v in items}


@dataclass
class GatewayProcess:
    """`health-gateway` with its own port, as an operator would run it."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return LOG_DIR / f"gateway-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True, timeout: float = 60.0) -> GatewayProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        binary = str(Path(sys.executable).with_name("health-gateway"))
        env = {**os.environ, "GATEWAY_WORKERS": "1", **self.env, "GATEWAY_PORT": str(self.port)}
        self.proc = subprocess.Popen([binary], env=env, stdout=log, stderr=log)
        path = "/readyz" if ready else "/livez"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited {self.proc.returncode}; see {self.log_path}")
            try:
                if self.get(path)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"gateway not answering {path} after {timeout}s; see {self.log_path}")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        timeout: float = 90.0,
        **headers: str,
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return int(r.status), _lower(r.headers.items()), bytes(r.read())
        except urllib.error.HTTPError as err:
            return int(err.code), _lower(err.headers.items()), bytes(err.read())

    def get(self, path: str) -> tuple[int, bytes]:
        status, _, body = self.request("GET", path, timeout=5)
        return status, body

    def post(self, body: bytes, **headers: str) -> tuple[int, dict[str, str], bytes]:
        headers.setdefault("Content-Type", "application/json")
        return self.request("POST", "/upload_health_data", body, **headers)

    def metric(self, name: str, **labels: str) -> float:
        _, body = self.get("/metrics")
        return sum(
            s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
