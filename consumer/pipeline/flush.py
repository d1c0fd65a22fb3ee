"""One batch through the sinks, in their order; the offset may advance only after.

The flush knows sinks only through `sinks.base.Sink`. Before them, for a batch with
readings: the rules are loaded and the readings bound to their customer (DB look-ups,
retried like a required sink). Then every sink of `Sinks.chain`, in order (stores of
record, outputs, dead letters, caches):
- the readings still standing and the alerts fired on them are handed over;
- a `Retryable` failure of a required sink is retried with backoff, forever; health
  names its dependency (not for `Contention`: a deadlock says nothing of MySQL's state);
- a `RowFault` or a bug of a required sink bisects the batch until the failing rows stand
  alone; they become dead letters (`db_rejected`, `internal_error`), the rest go on;
- a best-effort sink's failure of any kind is logged and counted, and the flush goes on.
The first required sink that takes readings is the store of record: the rules fire in its
bisection (a rejected reading is no step of a trend run), and what it stored first
decides which alerts later sinks publish. The dead-letter sink comes after every required
sink that can reject rows, so when `flush` returns every required sink has the batch and
every dead letter is acknowledged: nothing is committed before that. A batch without
readings (dead letters only) opens no DB transaction, so invalid messages are committed
during a DB outage too.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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
from consumer.pipeline.reasons import DeadLetterReason
from consumer.pipeline.retry import Backoff
from consumer.sinks.base import (
    ORDER_DEAD_LETTERS,
    Abandoned,
    Letter,
    Policy,
    Sink,
    SinkBatch,
    SinkResult,
)
from consumer.sinks.chain import Sinks
from consumer.sinks.errors import Contention, Retryable, RowFault, SinkError
from consumer.sinks.mysql import classify, distinct_readings
from schemas.record import HealthRecord

__all__ = ["Abandoned", "Flusher", "RetryPolicy", "Sinks"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Entry = tuple[HealthRecord, PendingMessage]
Rejected = tuple[Entry, DeadLetterReason, str]  # (entry, reason, detail)
DB = "mysql"  # what the rules and bindings are read from


class _Failed(Exception):
    """A required sink's failure that retrying cannot fix: a row fault or a bug."""

    def __init__(self, fault: SinkError, cause: Exception) -> None:
        super().__init__(str(fault))
        self.fault = fault
        self.cause = cause

    def rejection(self) -> tuple[DeadLetterReason, str]:
        if isinstance(self.fault, RowFault):
            return self.fault.reason, str(self.fault)
        return DeadLetterReason.INTERNAL_ERROR, f"{type(self.cause).__name__}: {self.cause}"


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
        # The store of record: the first required sink that takes the readings.
        self._store = next(
            (s for s in sinks if s.policy is Policy.REQUIRED and s.order < ORDER_DEAD_LETTERS),
            None,
        )

    def flush(self, batch: Batch) -> FlushReport:
        """Make the batch durable and record it; raise Abandoned if told to give up first."""
        started = time.monotonic()
        report = FlushReport(self.partition, len(batch), batch.record_count)
        entries = [(r, m) for m in batch.messages for r in m.records]
        work = SinkBatch(
            self.sinks.topic, self.partition, [r for r, _ in entries], cancel=self.abandon
        )
        work.letters = [
            Letter(m, m.dead_letter.reason, m.dead_letter.detail)
            for m in batch.messages
            if m.dead_letter is not None
        ]
        rules: list[HealthRule] = []
        if entries:  # dead letters alone need neither the rules nor the DB
            rules = self._retry(DB, self.rules.rules, report)
            self._bind(work.records, report)
            self._rebuild_runs(rules, work.records, report)
        fire = True  # the rules fire in the store of record's bisection
        for sink in self.sinks:
            t0, alerts_before = time.monotonic(), report.alert_seconds
            if sink.policy is Policy.BEST_EFFORT:
                self._best_effort(sink, work, batch, report)
            elif sink.order >= ORDER_DEAD_LETTERS:  # takes no rows: nothing to bisect
                self._take(sink, self._write(sink, work, report), work, report)
            elif entries:
                entries = self._required(sink, entries, work, rules, fire, report)
                fire = False
            spent = time.monotonic() - t0 - (report.alert_seconds - alerts_before)
            report.stage_seconds[sink.name] = spent
        report.alerts = work.new_alerts
        report.dead_letters = len(work.letters)
        self.ledger.dead_lettered([letter.reason for letter in work.letters])
        report.total_seconds = time.monotonic() - started
        self.ledger.flushed(report, [m.timestamp_ms for m in batch.messages])
        return report

    # --- required sinks ----------------------------------------------------------------

    def _required(
        self,
        sink: Sink,
        entries: list[Entry],
        work: SinkBatch,
        rules: list[HealthRule],
        fire: bool,
        report: FlushReport,
    ) -> list[Entry]:
        """Write through a required sink, bisecting row faults and bugs; return the entries
        it kept (the ones it refused are dead letters now)."""
        fired: list[Alert] = []
        state, rejected = self._isolating(
            sink, entries, work, rules, fire, self.trend_state, fired, report
        )
        if fire:
            self.trend_state = state
            work.alerts = fired
        if not rejected:
            return entries
        if any(reason is DeadLetterReason.INTERNAL_ERROR for _, reason, _ in rejected):
            self._log_bug(sink, entries, rejected)
        for (record, message), reason, detail in rejected:
            text = f"{reason} for reading {record.device_sn}@{record.timestamp}: {detail}"
            work.letters.append(Letter(message, reason, text))
        report.rejected_rows += len(rejected)
        bad = {id(entry[0]) for entry, _, _ in rejected}
        kept = [e for e in entries if id(e[0]) not in bad]
        work.records = [r for r, _ in kept]
        work.alerts = [a for a in work.alerts if id(a.record) not in bad]
        return kept

    def _isolating(
        self,
        sink: Sink,
        entries: list[Entry],
        work: SinkBatch,
        rules: list[HealthRule],
        fire: bool,
        state: TrendState,
        fired: list[Alert],
        report: FlushReport,
    ) -> tuple[TrendState, list[Rejected]]:
        """Write entries; on a row fault or a bug, bisect until the failures stand alone."""
        if not entries:
            return state, []
        records = [r for r, _ in entries]
        if fire:
            t0 = time.monotonic()
            # A repeated (device, timestamp) is one reading, the first (issue 18, S3).
            alerts, new_state = fire_alerts(rules, distinct_readings(records), state)
            report.alert_seconds += time.monotonic() - t0
        else:
            ids = {id(r) for r in records}
            alerts, new_state = [a for a in work.alerts if id(a.record) in ids], state
        part = replace(work, records=records, alerts=alerts)
        try:
            result = self._write(sink, part, report)
        except _Failed as failed:
            failure = failed.rejection()
        else:
            fired.extend(alerts)
            self._take(sink, result, work, report)
            return new_state, []
        if len(entries) == 1:
            return state, [(entries[0], *failure)]
        mid = len(entries) // 2
        state, left = self._isolating(sink, entries[:mid], work, rules, fire, state, fired, report)
        state, right = self._isolating(sink, entries[mid:], work, rules, fire, state, fired, report)
        return state, left + right

    def _take(self, sink: Sink, result: SinkResult, work: SinkBatch, report: FlushReport) -> None:
        """Record what a sink took; the store of record's numbers are the batch's."""
        report.written[sink.name] += result.written
        report.refused[sink.name] += result.refused
        work.new_alerts.extend(result.new_alerts)
        if sink is self._store:
            report.inserted += result.written
            report.duplicates += result.duplicates
            report.db_writes += 1
            report.db_committed_at = time.time()

    def _write(self, sink: Sink, part: SinkBatch, report: FlushReport) -> SinkResult:
        """One required write, retried while the sink says it cannot take it now."""

        def call() -> SinkResult:
            try:
                return sink.write_batch(part)
            except Abandoned:
                raise
            except Exception as err:
                fault = sink.classify(err)
                if isinstance(fault, Retryable):
                    raise fault from err
                raise _Failed(fault, err) from err

        return self._retry(sink.dependency, call, report, sink.name)

    def _log_bug(self, sink: Sink, entries: list[Entry], rejected: list[Rejected]) -> None:
        """Rows dead-lettered for a bug: loud, once per flush (they are replayable)."""
        bugs = [r for r in rejected if r[1] is DeadLetterReason.INTERNAL_ERROR]
        log.critical(
            "rows failed alone with an unexpected error: dead-lettered as internal_error",
            extra={
                "partition": self.partition,
                "sink": sink.name,
                "first_offset": entries[0][1].offset,
                "last_offset": entries[-1][1].offset,
                "rows": len(bugs),
                "error": bugs[0][2][:500],
            },
        )

    # --- best-effort sinks -------------------------------------------------------------

    def _best_effort(self, sink: Sink, work: SinkBatch, batch: Batch, report: FlushReport) -> None:
        """A failure of any kind is logged and counted, and never blocks the partition."""
        try:
            result = sink.write_batch(work)
        except Abandoned:
            raise
        except Exception as err:
            fault = sink.classify(err)
            if isinstance(fault, Retryable):
                self.dependencies.report(sink.dependency, False, str(fault))
            log.log(
                logging.WARNING if isinstance(fault, Retryable) else logging.ERROR,
                "best-effort sink failed; batch skipped by it",
                exc_info=not isinstance(fault, Retryable),
                extra={
                    "partition": self.partition,
                    "sink": sink.name,
                    "first_offset": batch.messages[0].offset,
                    "last_offset": batch.messages[-1].offset,
                },
            )
            result = SinkResult(skipped=True)
        if result.skipped:
            report.skipped.append(sink.name)
        self._take(sink, result, work, report)

    # --- before the sinks: rules, bindings, trend runs -----------------------------------

    def _rebuild_runs(
        self, rules: list[HealthRule], records: list[HealthRecord], report: FlushReport
    ) -> None:
        """Before a device's first reading since this worker got the partition, rebuild its
        trend runs from its stored readings: the run a previous owner (or this process
        before a restart) had built, so a trend alert fires once per episode, at the
        reading it would have fired at without the rebalance (issue 17, B11)."""
        lookback = trend_lookback(rules)
        history = self.sinks.history
        if not lookback or history is None:
            return
        first_seen: dict[str, dt.datetime] = {}
        for record in records:
            if record.device_sn not in self.known_devices:
                first_seen.setdefault(record.device_sn, record.timestamp)
        if not first_seen:
            return
        readings = self._retry(
            history.dependency, lambda: history.recent_readings(first_seen, lookback), report
        )
        self.trend_state = rebuild_runs(rules, readings, self.trend_state)
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

        bind_in_place(records, self._retry(DB, lookup, report))

    def _retry(
        self, dependency: str, call: Callable[[], T], report: FlushReport, stage: str = DB
    ) -> T:
        """Run a call until it works: `Retryable` is retried forever, with backoff."""
        backoff = Backoff(self.retry.db_initial_s, self.retry.db_max_s)
        while True:
            try:
                result = call()
            except Retryable as err:
                if not isinstance(err, Contention):
                    self.dependencies.report(dependency, False, str(err))
                self.ledger.retried(stage)
                delay = backoff.next_delay()
                if backoff.attempt == 1 or backoff.attempt % 20 == 0:
                    log.warning(
                        "write failed, retrying",
                        extra={
                            "partition": self.partition,
                            "sink": stage,
                            "attempt": backoff.attempt,
                            "retry_in_s": round(delay, 2),
                            "error": str(err)[:300],
                        },
                    )
                if self.abandon.wait(delay):
                    raise Abandoned from err
                continue
            if not self.dependencies.is_up(dependency):
                self.dependencies.report(dependency, True)
            return result
