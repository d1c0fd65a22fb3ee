"""Helpers for tests against the real stack: isolated topics/databases, consumer processes."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from sqlalchemy import Engine, create_engine, text

from consumer.tools.replicas import ReplicaProcess, total

ROOT = Path(__file__).resolve().parents[2]
KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
DB_ROOT_URL = os.environ.get("DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306/health")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
LOG_DIR = ROOT / ".runtime" / "test-logs"


def wait_for(
    predicate: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def db_url(name: str) -> str:
    return DB_ROOT_URL.rsplit("/", 1)[0] + "/" + name


@dataclass
class Stack:
    """One test's private slice of the shared services."""

    topic: str
    dlq_topic: str
    group: str
    database: str
    engine: Engine
    admin: AdminClient
    partitions: int
    processes: list[ConsumerProcess] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return db_url(self.database)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": KAFKA,
            "KAFKA_TOPIC": self.topic,
            "DLQ_TOPIC": self.dlq_topic,
            "KAFKA_GROUP_ID": self.group,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL,
            "LOG_FORMAT": "json",
            "BATCH_MAX_WAIT_MS": "100",
        }
        env.update(extra)
        return env

    def consumer(self, **extra: str) -> ConsumerProcess:
        proc = ConsumerProcess(self, extra)
        self.processes.append(proc)
        return proc

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def health_rows(self) -> int:
        return int(self.scalar("SELECT COUNT(*) FROM t_user_health_data"))

    def add_heart_rate_rule(self, high: int, trend: int = 1, customer: int = 0) -> None:
        """A `heart_rate_high` rule: 40 <= heart rate <= `high`, `trend` readings in a row."""
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_min, "
                    "threshold_max, trend_duration, severity_level, alert_message, customer_id) "
                    "VALUES ('heart_rate_high', 'heart_rate', 40, :high, :trend, 'critical', "
                    "'Heart rate high', :customer)"
                ),
                {"high": high, "trend": trend, "customer": customer},
            )

    def committed_all(self) -> bool:
        """Every partition's committed offset is at its end (empty ones have none)."""
        end = self.end_offsets()
        return all(self.committed().get(p) == e for p, e in end.items() if e > 0)

    def produce(
        self, messages: Iterable[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]
    ) -> int:
        producer = Producer(
            {
                "bootstrap.servers": KAFKA,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "enable.idempotence": True,
            }
        )
        n = 0
        for key, value, headers in messages:
            producer.produce(self.topic, key=key, value=value, headers=headers or None)
            producer.poll(0)
            n += 1
        assert producer.flush(30) == 0
        return n

    def end_offsets(self, topic: str | None = None) -> dict[int, int]:
        c = Consumer({"bootstrap.servers": KAFKA, "group.id": f"probe-{uuid.uuid4().hex}"})
        try:
            t = topic or self.topic
            return {
                p: c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for p in range(self.partitions_of(t))
            }
        finally:
            c.close()

    def committed(self) -> dict[int, int]:
        c = Consumer({"bootstrap.servers": KAFKA, "group.id": self.group})
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            return {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
        finally:
            c.close()

    def partitions_of(self, topic: str) -> int:
        md = self.admin.list_topics(topic=topic, timeout=10).topics[topic]
        return len(md.partitions)

    def read_topic(self, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
        """Read `expected` messages from the start of `topic`."""
        c = Consumer(
            {
                "bootstrap.servers": KAFKA,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        c.subscribe([topic])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < expected and time.monotonic() < deadline:
                for m in c.consume(500, timeout=0.5):
                    if m.error() is None:
                        out.append(m)
            # linger briefly to catch anything beyond the expected count
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                out.extend(m for m in c.consume(500, timeout=0.2) if m.error() is None)
        finally:
            c.close()
        return out


class ConsumerProcess(ReplicaProcess):
    """`health-consumer run` as a real OS process (so tests can SIGTERM and kill -9 it)."""

    def __init__(self, stack: Stack, extra: dict[str, str]) -> None:
        port = free_port()
        super().__init__(
            env=stack.env(**extra), log_path=LOG_DIR / f"{stack.group}-{port}.log", port=port
        )

    def start(self) -> ConsumerProcess:
        super().start()
        self.wait_ready()
        return self

    def launch(self) -> ConsumerProcess:
        """Start without waiting for readiness (a replica started during an outage)."""
        super().start()
        return self

    def json(self, path: str) -> tuple[int, Any]:
        status, body = self.get(path)
        return status, orjson.loads(body)

    def metric(self, name: str) -> float:
        """One sample, addressed as `name{label=value,...}` (labels sorted)."""
        base, _, rest = name.partition("{")
        labels = dict(kv.split("=", 1) for kv in rest.rstrip("}").split(",") if kv)
        return total([self.samples()], base, **labels)

    def terminate(self, timeout: float = 60.0) -> int | None:
        return self.stop(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def make_stack(partitions: int = 12) -> Stack:
    suffix = uuid.uuid4().hex[:10]
    database = f"hs_test_{suffix}"
    root = create_engine(DB_ROOT_URL)
    with root.begin() as conn:
        conn.execute(text(f"CREATE DATABASE {database} CHARACTER SET utf8mb4"))
    root.dispose()
    admin = AdminClient({"bootstrap.servers": KAFKA})
    topic, dlq = f"it-{suffix}", f"it-{suffix}.dlq"
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    )
    futures[topic].result(30)
    from consumer.db.migrate import upgrade_to_head

    upgrade_to_head(db_url(database))
    engine = create_engine(db_url(database), pool_pre_ping=True)
    return Stack(topic, dlq, f"it-group-{suffix}", database, engine, admin, partitions)


def drop_stack(stack: Stack) -> None:
    for proc in stack.processes:
        proc.cleanup()
    stack.engine.dispose()
    root = create_engine(DB_ROOT_URL)
    with root.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {stack.database}"))
    root.dispose()
    stack.admin.delete_topics([stack.topic, stack.dlq_topic])
