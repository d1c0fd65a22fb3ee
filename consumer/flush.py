"""One batch through the sinks: dead letters -> DB (retry/bisect) -> Redis -> alerts.

The order is the product's guarantee: nothing is reported flushed (and so nothing is
committed) until the DB transaction committed and every dead letter was acknowledged by
the broker. Redis and alert publishing follow the DB, so they can lag but never lead it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from consumer.batching import Batch, PendingMessage
from consumer.dependencies import Dependencies
from consumer.health_alerts.repository import RuleCache
from consumer.health_alerts.rules import Alert, AlertRule, TrendState, evaluate
from consumer.metrics import Metrics
from consumer.retry import Backoff
from consumer.sinks.dlq import DeadLetterSink, Delivery
from consumer.sinks.mysql import DatabaseUnavailable, MySQLSink, RowRejected, WriteResult
from consumer.sinks.redis import RedisSink
from schemas.record import HealthRecord

log = logging.getLogger(__name__)


class Abandoned(Exception):
    """The worker was told to give up (revoke timeout, lost partition, hard shutdown)."""


@dataclass(slots=True)
class FlushReport:
    """What one flush did; feeds metrics and the per-batch log/summary."""

    partition: int
    messages: int
    records: int
    inserted: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    rejected_rows: int = 0
    alerts: list[Alert] = field(default_factory=list)
    redis_skipped: bool = False
    db_seconds: float = 0.0
    redis_seconds: float = 0.0
    alert_seconds: float = 0.0
    total_seconds: float = 0.0
    db_attempts: int = 0
    db_committed_at: float = 0.0  # wall clock of the (last) DB commit: the e2e latency end


@dataclass(slots=True)
class Sinks:
    """Everything a flush writes to, shared by all workers of a replica."""

    topic: str
    mysql: MySQLSink
    redis: RedisSink
    dlq: DeadLetterSink
    rules: RuleCache
    dependencies: Dependencies
    metrics: Metrics
    db_backoff_initial_s: float = 0.1
    db_backoff_max_s: float = 5.0


class Flusher:
    """Flushes the batches of one partition; owns that partition's alert trend state."""

    def __init__(self, sinks: Sinks, partition: int, abandon: threading.Event) -> None:
        self.sinks = sinks
        self.partition = partition
        self.abandon = abandon
        self.trend_state: TrendState = {}

    def flush(self, batch: Batch) -> FlushReport:
        """Make the batch durable; raise Abandoned if told to give up first."""
        started = time.monotonic()
        report = FlushReport(self.partition, len(batch), batch.record_count)
        deliveries = [
            self._dead_letter(m, m.dead_letter.reason, m.dead_letter.detail)
            for m in batch.dead_letters()
            if m.dead_letter is not None
        ]
        report.dead_letters = len(deliveries)

        rules = self.sinks.rules.rules()
        entries = [(r, m) for m in batch.messages for r in m.records]
        t0 = time.monotonic()
        state, rejected = self._write_isolating(entries, rules, self.trend_state, report)
        report.db_seconds = time.monotonic() - t0 - report.alert_seconds
        for (record, message), error in rejected:
            detail = f"db rejected reading {record.device_sn}@{record.timestamp}: {error}"
            deliveries.append(self._dead_letter(message, "db_rejected", detail))
        report.rejected_rows = len(rejected)
        report.dead_letters += len(rejected)
        self._await(deliveries)
        self.trend_state = state

        t1 = time.monotonic()
        accepted = [r for r, _ in entries] if not rejected else _without(entries, rejected)
        redis_result = self.sinks.redis.update(accepted, report.alerts)
        report.redis_skipped = redis_result.skipped
        report.redis_seconds = time.monotonic() - t1
        report.total_seconds = time.monotonic() - started
        return report

    # --- DB -----------------------------------------------------------------------------

    def _write_isolating(
        self,
        entries: list[tuple[HealthRecord, PendingMessage]],
        rules: list[AlertRule],
        state: TrendState,
        report: FlushReport,
    ) -> tuple[TrendState, list[tuple[tuple[HealthRecord, PendingMessage], str]]]:
        """Write entries; on a row error, bisect until the offending rows stand alone."""
        t0 = time.monotonic()
        records = [r for r, _ in entries]
        alerts, new_state = evaluate(rules, records, state)
        report.alert_seconds += time.monotonic() - t0
        try:
            result = self._write_with_retry(records, alerts, report)
        except RowRejected as err:
            if len(entries) == 1:
                return state, [(entries[0], str(err))]
            mid = len(entries) // 2
            state, left = self._write_isolating(entries[:mid], rules, state, report)
            state, right = self._write_isolating(entries[mid:], rules, state, report)
            return state, left + right
        report.db_committed_at = time.time()
        report.inserted += result.inserted
        report.duplicates += result.duplicates
        report.alerts.extend(result.new_alerts)
        return new_state, []

    def _write_with_retry(
        self, records: list[HealthRecord], alerts: list[Alert], report: FlushReport
    ) -> WriteResult:
        backoff = Backoff(self.sinks.db_backoff_initial_s, self.sinks.db_backoff_max_s)
        while True:
            report.db_attempts += 1
            try:
                result = self.sinks.mysql.write(records, alerts)
            except DatabaseUnavailable as err:
                self.sinks.dependencies.report("mysql", False, str(err))
                self.sinks.metrics.db_retries.inc()
                delay = backoff.next_delay()
                if backoff.attempt == 1 or backoff.attempt % 20 == 0:
                    log.warning(
                        "db write failed, retrying",
                        extra={
                            "partition": self.partition,
                            "attempt": backoff.attempt,
                            "retry_in_s": round(delay, 2),
                            "error": str(err)[:300],
                        },
                    )
                if self.abandon.wait(delay):
                    raise Abandoned from err
                continue
            if not self.sinks.dependencies.is_up("mysql"):
                self.sinks.dependencies.report("mysql", True)
            return result

    # --- dead letters -------------------------------------------------------------------

    def _dead_letter(self, message: PendingMessage, reason: str, detail: str) -> Delivery:
        self.sinks.metrics.dead_letters.labels(reason).inc()
        return self.sinks.dlq.send(
            key=message.key,
            value=message.value,
            reason=reason,
            detail=detail,
            source_topic=self.sinks.topic,
            source_partition=self.partition,
            source_offset=message.offset,
        )

    def _await(self, deliveries: list[Delivery]) -> None:
        """Block until the broker acknowledged every dead letter; resend the failures."""
        backoff = Backoff(0.2, 5.0)
        pending = deliveries
        while pending:
            for delivery in pending:
                while not delivery.done.wait(0.2):
                    if self.abandon.is_set():
                        raise Abandoned
            failed = [d for d in pending if d.error is not None]
            if not failed:
                return
            log.warning("dead-letter delivery failed, resending: %s", failed[0].error)
            self.sinks.dependencies.report("kafka", False, failed[0].error)
            if self.abandon.wait(backoff.next_delay()):
                raise Abandoned
            pending = [self.sinks.dlq.resend(d) for d in failed]


def _without(
    entries: list[tuple[HealthRecord, PendingMessage]],
    rejected: list[tuple[tuple[HealthRecord, PendingMessage], str]],
) -> list[HealthRecord]:
    bad = {id(entry[0]) for entry, _ in rejected}
    return [r for r, _ in entries if id(r) not in bad]
