"""In-memory stand-ins for the Kafka consumer and the sinks (arroyo's local-backend idea).

They let the poll loop, workers and flush run for real, on real threads, with no services:
rebalance callbacks fire inside `consume()` like librdkafka's, async commits are answered
on a later `consume()`, and the sinks record what they were given or fail on demand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TopicPartition

from consumer.health_alerts.rules import Alert
from consumer.sinks.dlq import Delivery
from consumer.sinks.mysql import WriteResult
from consumer.sinks.redis import RedisResult
from schemas.record import HealthRecord

TOPIC = "health-data"


@dataclass
class FakeMessage:
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _timestamp_ms: int = 1_700_000_000_000

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


@dataclass
class FakeBroker:
    """Partition logs and the group's committed offsets."""

    logs: dict[int, list[FakeMessage]] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    commits: list[tuple[bool, dict[int, int]]] = field(default_factory=list)  # (sync, offsets)

    def produce(self, partition: int, key: bytes | None, value: bytes | None) -> int:
        log = self.logs.setdefault(partition, [])
        log.append(FakeMessage(partition, len(log), key, value))
        return len(log) - 1


class FakeConsumer:
    def __init__(
        self,
        broker: FakeBroker,
        on_commit: Callable[[Any, list[TopicPartition]], None],
        on_error: Callable[[Any], None],
    ) -> None:
        self.broker = broker
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._events: list[tuple[str, list[int]]] = []
        self._acks: list[list[TopicPartition]] = []
        self._position: dict[int, int] = {}
        self.paused: set[int] = set()
        self.closed = False
        self._callbacks: dict[str, Callable[[Any, list[TopicPartition]], None]] = {}

    # --- test controls (any thread) ------------------------------------------------------

    def rebalance(self, event: str, partitions: list[int]) -> None:
        """Queue an 'assign', 'revoke' or 'lost' for the next consume() call."""
        with self._lock:
            self._events.append((event, partitions))

    # --- the Consumer API the poll loop uses -------------------------------------------------

    def subscribe(self, topics: list[str], *, on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        with self._lock:
            events, self._events = self._events, []
            acks, self._acks = self._acks, []
        for tps in acks:
            self._on_commit(None, tps)
        for event, partitions in events:
            tps = [TopicPartition(TOPIC, p) for p in partitions]
            if event == "assign":
                for p in partitions:
                    self._position[p] = self.broker.committed.get(p, 0)
            self._callbacks[event](self, tps)
            if event != "assign":
                for p in partitions:
                    self._position.pop(p, None)
        out: list[FakeMessage] = []
        for p, pos in list(self._position.items()):
            if p in self.paused:
                continue
            log = self.broker.logs.get(p, [])
            take = log[pos : pos + num_messages - len(out)]
            self._position[p] = pos + len(take)
            out.extend(take)
        if not out:
            time.sleep(min(timeout, 0.01))
        return out

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused.update(tp.partition for tp in tps)

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused.difference_update(tp.partition for tp in tps)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> Any:
        done = {tp.partition: tp.offset for tp in offsets}
        self.broker.commits.append((not asynchronous, done))
        self.broker.committed.update(done)
        if asynchronous:
            with self._lock:
                self._acks.append(offsets)
            return None
        return offsets

    def close(self) -> None:
        self.closed = True


class FakeMySQL:
    """Records committed batches; `fail` decides per call what to raise (or None)."""

    def __init__(self, fail: Callable[[list[HealthRecord]], Exception | None] | None = None):
        self.fail = fail or (lambda records: None)
        self.rows: list[HealthRecord] = []
        self.alerts: list[Alert] = []
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()  # clear it to make writes block (an outage that never ends)

    def write(self, records: list[HealthRecord], alerts: list[Alert]) -> WriteResult:
        self.calls += 1
        self.gate.wait()
        error = self.fail(records)
        if error is not None:
            raise error
        self.rows.extend(records)
        self.alerts.extend(alerts)
        return WriteResult(inserted=len(records), new_alerts=list(alerts))


class FakeRedis:
    def __init__(self) -> None:
        self.updates: list[list[HealthRecord]] = []

    def update(self, records: list[HealthRecord], alerts: list[Alert]) -> RedisResult:
        self.updates.append(records)
        return RedisResult(updated=len(records))


class FakeDLQ:
    """Acknowledges every dead letter at once and keeps (reason, offset, detail)."""

    def __init__(self) -> None:
        self.letters: list[tuple[str, int, str]] = []

    def send(self, *, key: bytes | None, value: bytes | None, reason: str, detail: str,
             source_topic: str, source_partition: int, source_offset: int) -> Delivery:  # fmt: skip
        self.letters.append((reason, source_offset, detail))
        delivery = Delivery(key, value, [])
        delivery.done.set()
        return delivery

    def resend(self, failed: Delivery) -> Delivery:
        return failed


class NoRules:
    def rules(self) -> list[Any]:
        return []


class FlakyRules:
    """Rules that cannot be loaded `failures` times (the DB is down), then load."""

    def __init__(self, rules: list[Any], failures: int) -> None:
        self._rules = rules
        self.failures = failures

    def rules(self) -> list[Any]:
        from consumer.sinks.mysql import DatabaseUnavailable

        if self.failures > 0:
            self.failures -= 1
            raise DatabaseUnavailable("alert rules not loaded yet: gone")
        return self._rules
