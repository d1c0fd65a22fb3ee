"""In-memory stand-ins for the Kafka consumer and the sinks (arroyo's local-backend idea).

They let the poll loop, workers and flush run for real, on real threads, with no services.
The consumer behaves as librdkafka's does where the loop's guarantees depend on it
(tests/loop_contract.py runs the same scenarios against it and the real broker):
rebalance callbacks fire inside `consume()`; an async commit is only a request until a
later `consume()` answers it (committed then, or failed); a commit can be made to fail;
errors reach `error_cb` from `consume()`; `close()` revokes what is still assigned.
The sinks record what they were given or fail on demand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.health_alerts.rules import Alert
from consumer.sinks.base import ORDER_CACHE, ORDER_STORE, Policy, SinkBase, SinkBatch, SinkResult
from consumer.sinks.dlq import DeadLetterSink, Delivery
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
    _timestamp_ms: int = 1_900_000_000_000  # 2030: after every reading the tests send
    _headers: list[tuple[str, bytes]] = field(default_factory=list)

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

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers or None


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
        self._acks: list[tuple[list[TopicPartition], bool]] = []
        self._position: dict[int, int] = {}
        self._on_error = on_error
        self._errors: list[Any] = []
        self.paused: set[int] = set()
        self.closed = False
        self.fail_commits = 0  # the next N commits fail (async: in their answer; sync: raise)
        self._callbacks: dict[str, Callable[[Any, list[TopicPartition]], None]] = {}

    # --- test controls (any thread) ------------------------------------------------------

    def rebalance(self, event: str, partitions: list[int]) -> None:
        """Queue an 'assign', 'revoke' or 'lost' for the next consume() call."""
        with self._lock:
            self._events.append((event, partitions))

    def report_error(self, error: Any) -> None:
        """Queue a KafkaError for error_cb, served by the next consume() call."""
        with self._lock:
            self._errors.append(error)

    def _take_failure(self) -> bool:
        with self._lock:
            if self.fail_commits > 0:
                self.fail_commits -= 1
                return True
            return False

    # --- the Consumer API the poll loop uses -------------------------------------------------

    def subscribe(self, topics: list[str], *, on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        with self._lock:
            events, self._events = self._events, []
            acks, self._acks = self._acks, []
            errors, self._errors = self._errors, []
        for error in errors:
            self._on_error(error)
        for tps, failed in acks:
            if failed:
                self._on_commit(KafkaError(KafkaError.REQUEST_TIMED_OUT), tps)
            else:
                self.broker.committed.update({tp.partition: tp.offset for tp in tps})
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
        failed = self._take_failure()
        if asynchronous:  # a request: answered (and stored, or not) by a later consume()
            with self._lock:
                self._acks.append((offsets, failed))
            return None
        if failed:
            raise KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT))
        self.broker.committed.update(done)
        return offsets

    def close(self) -> None:
        """As librdkafka's close() of a subscribed consumer: what is still assigned is
        revoked through the rebalance callback first."""
        assigned = sorted(self._position)
        if assigned and "revoke" in self._callbacks:
            self._callbacks["revoke"](self, [TopicPartition(TOPIC, p) for p in assigned])
        self._position.clear()
        self.closed = True


class FakeMySQL(SinkBase):
    """Records committed batches; `fail` decides per call what to raise (or None)."""

    name, dependency, policy, order = "mysql", "mysql", Policy.REQUIRED, ORDER_STORE

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

    def write_batch(self, batch: SinkBatch) -> SinkResult:
        if not batch.records and not batch.alerts:
            return SinkResult()
        result = self.write(batch.records, batch.alerts)
        return SinkResult(result.inserted, result.duplicates, result.new_alerts)


class FakeRedis(SinkBase):
    name, dependency, policy, order = "redis", "redis", Policy.BEST_EFFORT, ORDER_CACHE

    def __init__(self) -> None:
        self.updates: list[list[HealthRecord]] = []

    def write_batch(self, batch: SinkBatch) -> SinkResult:
        result = self.update(batch.records, batch.new_alerts)
        return SinkResult(written=result.updated)

    def update(self, records: list[HealthRecord], alerts: list[Alert]) -> RedisResult:
        self.updates.append(records)
        return RedisResult(updated=len(records))


class FakeDLQ(DeadLetterSink):
    """The real sink's batch handling; acknowledges every dead letter at once and keeps
    (reason, offset, detail)."""

    def __init__(self) -> None:  # no producer
        self.letters: list[tuple[str, int, str]] = []
        self.truncated = 0

    def close(self, timeout_s: float = 0.0) -> None:
        return None

    def send(
        self,
        *,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        detail: str,
        source_topic: str,
        source_partition: int,
        source_offset: int,
        source_timestamp_ms: int | None = None,
        carried: Any = (),
    ) -> Delivery:
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
        from consumer.sinks.errors import Retryable

        if self.failures > 0:
            self.failures -= 1
            raise Retryable("alert rules not loaded yet: gone")
        return self._rules
