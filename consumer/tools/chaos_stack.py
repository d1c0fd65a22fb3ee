"""The chaos run's own Kafka/MariaDB/Redis and its fleet of consumer replicas.

The run kills and restarts services, so it never touches the shared stack on the default
ports: `scripts/services.sh` starts a second one on other ports with its own runtime
folder, and single services are stopped/started through the same script and env.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from consumer.tools.replicas import ReplicaProcess

ROOT = Path(__file__).resolve().parents[2]
SERVICES_SH = ROOT / "scripts" / "services.sh"


@dataclass(frozen=True, slots=True)
class StackPorts:
    kafka: int = 19092
    controller: int = 19093
    mariadb: int = 13306
    redis: int = 16379

    @classmethod
    def parse(cls, text: str) -> StackPorts:
        """ "19092,19093,13306,16379" (kafka, controller, mariadb, redis)."""
        k, c, m, r = (int(p) for p in text.split(","))
        return cls(k, c, m, r)


class ServiceError(RuntimeError):
    pass


@dataclass(slots=True)
class PrivateStack:
    runtime_dir: Path
    ports: StackPorts
    log: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            "HEALTHSTREAM_RUNTIME_DIR": str(self.runtime_dir),
            "HEALTHSTREAM_KAFKA_PORT": str(self.ports.kafka),
            "HEALTHSTREAM_KAFKA_CONTROLLER_PORT": str(self.ports.controller),
            "HEALTHSTREAM_MARIADB_PORT": str(self.ports.mariadb),
            "HEALTHSTREAM_REDIS_PORT": str(self.ports.redis),
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    def database_url(self, database: str) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.ports.mariadb}/{database}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    def services(self, command: str, *names: str, timeout: float = 300) -> float:
        """Run `services.sh COMMAND NAMES` with this stack's env; return its duration."""
        started = time.monotonic()
        result = subprocess.run(
            [str(SERVICES_SH), command, *names],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
        self.log.append(
            f"$ services.sh {command} {' '.join(names)}\n{result.stdout}{result.stderr}"
        )
        if result.returncode != 0:
            raise ServiceError(
                f"services.sh {command} {' '.join(names)} exited {result.returncode}: "
                f"{result.stderr.strip()[-800:]}"
            )
        return time.monotonic() - started

    def check_ports_private(self) -> None:
        """Refuse the default ports: the shared stack must never be stopped by a chaos run."""
        if {self.ports.kafka, self.ports.mariadb, self.ports.redis} & {9092, 3306, 6379}:
            raise ServiceError("chaos needs its own stack: do not use the default ports")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class Replica:
    """One `health-consumer run` process slot: killed, restarted, crashes detected."""

    name: str
    process: ReplicaProcess
    expected_down: bool = True  # stopped or killed by us, not crashed
    starts: int = 0
    crashes: int = 0  # in a row: the restart backoff grows with it
    restart_at: float | None = None  # crashed: restart then, as a supervisor would

    @property
    def alive(self) -> bool:
        proc = self.process.proc
        return proc is not None and proc.poll() is None

    def start(self) -> None:
        self.restart_at = None
        self.process.port = free_port()
        self.process.start()
        self.expected_down = False
        self.starts += 1

    def kill9(self) -> None:
        self.expected_down = True
        if self.process.proc is not None and self.alive:
            self.process.proc.send_signal(signal.SIGKILL)
            self.process.proc.wait(10)

    def terminate(self, timeout: float = 90.0) -> int | None:
        self.expected_down = True
        return self.process.stop(timeout)


@dataclass(slots=True)
class Crash:
    replica: str
    exit_code: int | None
    at_s: float
    log_lines: list[str]
    signature: str = ""  # the exception line, to group a crash loop into one finding
    partition: int | None = None  # the partition whose worker died, when one did


# "ValueError: ...", "decimal.InvalidOperation: [...]": the last line of a traceback.
_EXCEPTION_LINE = re.compile(r"^(?:[a-z_]\w*\.)*[A-Z]\w*(?::|$)")
_INTERESTING = re.compile(r'"level": ?"(WARNING|ERROR|CRITICAL)"|Traceback|Error:')


def crash_signature(path: Path) -> tuple[str, int | None]:
    """The exception that ended the replica: a dead worker's, else the last traceback's."""
    worker: tuple[str, int | None] | None = None
    last = ""
    for line in _tail(path, 2000):
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("msg") == "worker crashed" and entry.get("exc"):
                worker = (entry["exc"].strip().splitlines()[-1], entry.get("partition"))
        elif _EXCEPTION_LINE.match(line):
            last = line
    if worker is not None:
        return worker
    return last or "exited without a traceback", None


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 2_000_000))
            return list(deque(fh.read().decode("utf-8", "replace").splitlines(), maxlen=lines))
    except OSError:
        return []


def log_tail(path: Path, lines: int = 400, keep: int = 12) -> list[str]:
    """The last error-looking lines of a replica log (JSON lines, or a raw traceback)."""
    tail = _tail(path, lines)
    picked = [line[:1500] for line in tail if _INTERESTING.search(line)]
    return picked[-keep:] or [line[:1500] for line in tail[-3:]]


class Fleet:
    """Every replica of the run; detects crashes (exits we did not cause) and restarts them."""

    def __init__(self, env: dict[str, str], log_dir: Path, rng: random.Random) -> None:
        self.env = env
        self.log_dir = log_dir
        self.rng = rng
        self.replicas: list[Replica] = []
        self.crashes: list[Crash] = []
        self.started = time.monotonic()

    def add(self) -> Replica:
        name = f"r{len(self.replicas) + 1}"
        process = ReplicaProcess(env=self.env, log_path=self.log_dir / f"{name}.log", port=0)
        replica = Replica(name, process)
        self.replicas.append(replica)
        replica.start()
        return replica

    def running(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    def pick(self) -> Replica | None:
        alive = self.running()
        return self.rng.choice(alive) if alive else None

    def check(self, restart: bool = True) -> list[Crash]:
        """Record replicas that exited on their own and restart them after a backoff
        (1, 2, 4, 8 s), as a supervisor would: they are still wanted."""
        found = []
        now = time.monotonic()
        for replica in self.replicas:
            if replica.restart_at is not None and now >= replica.restart_at and restart:
                replica.start()
                continue
            if replica.expected_down or replica.alive:
                continue
            proc = replica.process.proc
            lines = log_tail(replica.process.log_path)
            signature, partition = crash_signature(replica.process.log_path)
            crash = Crash(
                replica.name,
                None if proc is None else proc.returncode,
                round(now - self.started, 1),
                lines,
                signature,
                partition,
            )
            self.crashes.append(crash)
            found.append(crash)
            replica.expected_down = True
            replica.crashes += 1
            if restart:
                replica.restart_at = now + min(8.0, 2.0 ** (replica.crashes - 1))
        return found

    def wanted(self) -> int:
        """Replicas running or about to be restarted after a crash."""
        return sum(1 for r in self.replicas if r.alive or r.restart_at is not None)

    def stop_all(self, timeout: float = 90.0) -> dict[str, int | None]:
        """SIGTERM every running replica at once, then wait: the final graceful drain.

        Exactly one signal each: a second SIGTERM means "exit now" to the consumer, and
        during interpreter teardown it would kill the process by the default action.
        """
        alive = self.running()
        for replica in alive:
            replica.expected_down = True
            if replica.process.proc is not None:
                replica.process.proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for replica in alive:
            proc = replica.process.proc
            assert proc is not None
            try:
                codes[replica.name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[replica.name] = proc.wait(10)
        return codes

    def kill_all(self) -> None:
        for replica in self.running():
            replica.kill9()
