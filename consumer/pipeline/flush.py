"""One batch through the sinks: dead letters out, rules, DB (retry/isolate), acks, Redis.

Order within `Flusher.flush`, which is the product's guarantee:
1. dead letters of the batch are handed to the DLQ producer (asynchronous);
2. health rules fire and the DB transaction commits: rows, daily/weekly, alerts;
3. every dead letter is acknowledged by the broker;
4. Redis gets the latest state and the alert messages.
Only when `flush` returns may the worker advance the offset, so nothing is committed before
the DB commit and the DLQ acks. Redis follows the DB: it can lag, never lead.

A DB failure falls in one of three kinds, decided by its class (`sinks.mysql.classify`):
- a row's values (`RowRejected`: any error the server answers with that is not a server
  state): bisect; the offending rows go to the DLQ (`db_rejected`);
- a dependency (`DatabaseUnavailable`): retry with backoff forever; health names MySQL
  (not for `Contention`: deadlocks and a busy pool are retried, MySQL is up);
- anything else is a bug: bisect too; a row that fails alone goes to the DLQ
  (`internal_error`, replayable once the bug is fixed), logged as critical.
A row's fate depends only on the row: the same row fails the same way alone or in a
backlog. A batch without readings (dead letters only) opens no DB transaction, so invalid
messages are committed during a DB outage too.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import exc

from consumer.dependencies import Dependencies
from consumer.health_alerts.repository import RuleCache
from consumer.health_alerts.rules import (
    Alert,
    HealthRule,
    TrendState,
    fire_alerts,
    rebuild_runs,
    trend_lookback,
)
from consumer.pipeline.batching import Batch, PendingMessage
from consumer.pipeline.binding import Binding, DeviceDirectory, bind_in_place, unbound_sns
from consumer.pipeline.ledger import FlushReport, Ledger
from consumer.pipeline.retry import Backoff
from consumer.sinks.dlq import DeadLetterSink, Delivery
from consumer.sinks.mysql import (
    Contention,
    DatabaseUnavailable,
    MySQLSink,
    RowRejected,
    WriteResult,
    classify,
    distinct_readings,
)
from consumer.sinks.redis import RedisSink
from schemas.record import HealthRecord

log = logging.getLogger(__name__)

T = TypeVar("T")
Entry = tuple[HealthRecord, PendingMessage]
Rejected = tuple[Entry, str, str]  # (entry, reason, detail)


class Abandoned(Exception):
    """The worker was told to give up (revoke timeout, lost partition, hard shutdown)."""


@dataclass(frozen=True, slots=True)
class Sinks:
    """Where a flush writes, shared by all workers of a replica."""

    topic: str  # the source topic, named in dead-letter headers
    mysql: MySQLSink
    redis: RedisSink
    dlq: DeadLetterSink


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    db_initial_s: float = 0.1
    db_max_s: float = 5.0


class Flusher:
    """Flushes the batches of one partition; owns that partition's alert trend state."""

    def __init__(
        self,
        partition: int,
        sinks: Sinks,
        rules: RuleCache,
        dependencies: Dependencies,
        ledger: Ledger,
        retry: RetryPolicy,
        directory: DeviceDirectory | None = None,
    ) -> None:
        self.partition = partition
        self.directory = directory
        self.sinks = sinks
        self.rules = rules
        self.dependencies = dependencies
        self.ledger = ledger
        self.retry = retry
        self.abandon = threading.Event()
        self.trend_state: TrendState = {}
        # Devices whose runs this flusher has rebuilt or built (see _rebuild_runs).
        self.known_devices: set[str] = set()

    def flush(self, batch: Batch) -> FlushReport:
        """Make the batch durable and record it; raise Abandoned if told to give up first."""
        started = time.monotonic()
        report = FlushReport(self.partition, len(batch), batch.record_count)
        letters = [(m, m.dead_letter.reason, m.dead_letter.detail)
                   for m in batch.messages if m.dead_letter is not None]  # fmt: skip
        deliveries = [self._dead_letter(m, reason, detail) for m, reason, detail in letters]
        report.dead_letters = len(deliveries)

        entries = [(r, m) for m in batch.messages for r in m.records]
        records = [r for r, _ in entries]
        state: TrendState = self.trend_state
        rejected: list[Rejected] = []
        if entries:  # dead letters alone need neither the rules nor the DB
            rules = self._retry_db(self.rules.rules, report)
            self._bind(records, report)
            self._rebuild_runs(rules, records, report)
            t0 = time.monotonic()
            state, rejected = self._write_isolating(entries, rules, self.trend_state, report)
            report.db_seconds = time.monotonic() - t0 - report.alert_seconds
        if any(reason == "internal_error" for _, reason, _ in rejected):
            self._log_bug(batch, rejected)
        for (record, message), reason, detail in rejected:
            text = f"{reason} for reading {record.device_sn}@{record.timestamp}: {detail}"
            deliveries.append(self._dead_letter(message, reason, text))
        report.rejected_rows = len(rejected)
        report.dead_letters += len(rejected)
        self.ledger.dead_lettered(
            [reason for _, reason, _ in letters] + [reason for _, reason, _ in rejected]
        )
        self._await(deliveries)
        self.trend_state = state

        t1 = time.monotonic()
        accepted = records if not rejected else _without(entries, rejected)
        report.redis_skipped = self._update_redis(batch, accepted, report)
        report.redis_seconds = time.monotonic() - t1
        report.total_seconds = time.monotonic() - started
        self.ledger.flushed(report, [m.timestamp_ms for m in batch.messages])
        return report

    # --- DB -----------------------------------------------------------------------------

    def _write_isolating(
        self, entries: list[Entry], rules: list[HealthRule], state: TrendState,
        report: FlushReport,
    ) -> tuple[TrendState, list[Rejected]]:  # fmt: skip
        """Write entries; on a row error or a bug, bisect until the failures stand alone."""
        if not entries:
            return state, []
        try:
            t0 = time.monotonic()
            records = [r for r, _ in entries]
            # A repeated (device, timestamp) is one reading, the first (issue 18, S3).
            alerts, new_state = fire_alerts(rules, distinct_readings(records), state)
            report.alert_seconds += time.monotonic() - t0
            result = self._write_with_retry(records, alerts, report)
        except Abandoned:
            raise
        except RowRejected as err:
            failure = ("db_rejected", str(err))
        except Exception as err:
            failure = ("internal_error", f"{type(err).__name__}: {err}")
        else:
            report.db_committed_at = time.time()
            report.inserted += result.inserted
            report.duplicates += result.duplicates
            report.alerts.extend(result.new_alerts)
            report.db_writes += 1
            return new_state, []
        if len(entries) == 1:
            return state, [(entries[0], *failure)]
        mid = len(entries) // 2
        state, left = self._write_isolating(entries[:mid], rules, state, report)
        state, right = self._write_isolating(entries[mid:], rules, state, report)
        return state, left + right

    def _log_bug(self, batch: Batch, rejected: list[Rejected]) -> None:
        """Rows dead-lettered for a bug: loud, once per flush (they are replayable)."""
        bugs = [r for r in rejected if r[1] == "internal_error"]
        log.critical(
            "rows failed alone with an unexpected error: dead-lettered as internal_error",
            extra={
                "partition": self.partition,
                "first_offset": batch.messages[0].offset,
                "last_offset": batch.messages[-1].offset,
                "rows": len(bugs),
                "error": bugs[0][2][:500],
            },
        )

    def _rebuild_runs(
        self, rules: list[HealthRule], records: list[HealthRecord], report: FlushReport
    ) -> None:
        """Before a device's first reading since this worker got the partition, rebuild its
        trend runs from its stored readings: the run a previous owner (or this process
        before a restart) had built, so a trend alert fires once per episode, at the
        reading it would have fired at without the rebalance (issue 17, B11)."""
        lookback = trend_lookback(rules)
        if not lookback:
            return
        first_seen: dict[str, dt.datetime] = {}
        for record in records:
            if record.device_sn not in self.known_devices:
                first_seen.setdefault(record.device_sn, record.timestamp)
        if not first_seen:
            return
        history = self._retry_db(
            lambda: self.sinks.mysql.recent_readings(first_seen, lookback), report
        )
        self.trend_state = rebuild_runs(rules, history, self.trend_state)
        self.known_devices.update(first_seen)

    def _bind(self, records: list[HealthRecord], report: FlushReport) -> None:
        """Fill customer/org/user of readings that lack them (before rules: they scope)."""
        if self.directory is None:
            return
        need = unbound_sns(records)
        if not need:
            return
        directory = self.directory

        def lookup() -> dict[str, Binding]:
            try:
                return directory.bindings(need)
            except exc.DBAPIError as err:
                raise classify(err.orig, err.connection_invalidated) from err

        bind_in_place(records, self._retry_db(lookup, report))

    def _write_with_retry(
        self, records: list[HealthRecord], alerts: list[Alert], report: FlushReport
    ) -> WriteResult:
        return self._retry_db(lambda: self.sinks.mysql.write(records, alerts), report)

    def _retry_db(self, call: Callable[[], T], report: FlushReport) -> T:
        """Run a DB call until it works: an outage is retried forever, with backoff."""
        backoff = Backoff(self.retry.db_initial_s, self.retry.db_max_s)
        while True:
            report.db_attempts += 1
            try:
                result = call()
            except DatabaseUnavailable as err:
                if not isinstance(err, Contention):
                    self.dependencies.report("mysql", False, str(err))
                self.ledger.db_retried()
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
            if not self.dependencies.is_up("mysql"):
                self.dependencies.report("mysql", True)
            return result

    # --- Redis --------------------------------------------------------------------------

    def _update_redis(self, batch: Batch, records: list[HealthRecord], report: FlushReport) -> bool:
        """Return True when the cache update was skipped. Redis is a cache: a bug in this
        step is logged loudly and counted, but never blocks the partition."""
        try:
            result = self.sinks.redis.update(records, report.alerts)
            report.redis_key_errors = result.key_errors
            return result.skipped
        except Exception:
            log.exception(
                "redis update failed with an unexpected error; cache not updated",
                extra={
                    "partition": self.partition,
                    "first_offset": batch.messages[0].offset,
                    "last_offset": batch.messages[-1].offset,
                },
            )
            return True

    # --- dead letters -------------------------------------------------------------------

    def _dead_letter(self, message: PendingMessage, reason: str, detail: str) -> Delivery:
        return self.sinks.dlq.send(
            key=message.key,
            value=message.value,
            reason=reason,
            detail=detail,
            source_topic=self.sinks.topic,
            source_partition=self.partition,
            source_offset=message.offset,
            source_timestamp_ms=message.timestamp_ms,
            carried=message.carried,
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
            self.dependencies.report("kafka", False, failed[0].error)
            if self.abandon.wait(backoff.next_delay()):
                raise Abandoned
            pending = [self.sinks.dlq.resend(d) for d in failed]


def _without(entries: list[Entry], rejected: list[Rejected]) -> list[HealthRecord]:
    bad = {id(entry[0]) for entry, _, _ in rejected}
    return [r for r, _ in entries if id(r) not in bad]
