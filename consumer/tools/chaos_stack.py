"""The chaos run's own Kafka/MariaDB/Redis and its fleet of consumer replicas.

The run kills and restarts services, so it never touches the shared stack on the default
ports: `scripts/services.sh` starts a second one on other ports with its own runtime
folder, and single services are stopped/started through the same script and env.
"""

from __future__ import annotations

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

from consumer.replicas import ReplicaProcess

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

    @property
    def alive(self) -> bool:
        proc = self.process.proc
        return proc is not None and proc.poll() is None

    def start(self) -> None:
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


_INTERESTING = re.compile(r'"level": ?"(ERROR|CRITICAL)"|Traceback|Error:')


def log_tail(path: Path, lines: int = 400, keep: int = 12) -> list[str]:
    """The last error-looking lines of a replica log (JSON lines, or a raw traceback)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 400_000))
            tail = deque(fh.read().decode("utf-8", "replace").splitlines(), maxlen=lines)
    except OSError:
        return []
    picked = [line[:1500] for line in tail if _INTERESTING.search(line)]
    return picked[-keep:] or [line[:1500] for line in list(tail)[-3:]]


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
        """Record replicas that exited on their own; restart them (they are still wanted)."""
        found = []
        for replica in self.replicas:
            if replica.expected_down or replica.alive:
                continue
            proc = replica.process.proc
            crash = Crash(
                replica.name,
                None if proc is None else proc.returncode,
                round(time.monotonic() - self.started, 1),
                log_tail(replica.process.log_path),
            )
            self.crashes.append(crash)
            found.append(crash)
            replica.expected_down = True
            if restart:
                replica.start()
        return found

    def stop_all(self, timeout: float = 90.0) -> dict[str, int | None]:
        """SIGTERM every running replica at once, then wait: the final graceful drain."""
        codes: dict[str, int | None] = {}
        alive = self.running()
        for replica in alive:
            replica.expected_down = True
            if replica.process.proc is not None:
                replica.process.proc.send_signal(signal.SIGTERM)
        for replica in alive:
            codes[replica.name] = replica.terminate(timeout)
        return codes

    def kill_all(self) -> None:
        for replica in self.running():
            replica.kill9()
