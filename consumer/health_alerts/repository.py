"""Live alert rules from `t_alert_rules`, cached and refreshed in the background of flushes.

Workers ask for rules on every flush; the DB is read at most once per refresh interval
for the whole replica. A failed refresh keeps the last good rules (a DB blip must not
silence every alert) and is retried at the next interval; a replica that never loaded its
rules does not flush without them.

A rule that cannot be evaluated (a rule_type without an evaluator, a metric rule on a sign
the record does not carry) is never dropped silently: each one is counted in
`UnusableRules` (health_consumer_alert_rules_unusable_total) and logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from decimal import Decimal

from sqlalchemy import Engine, exc, select

from consumer.db.tables import alert_rules
from consumer.health_alerts.rules import UNUSABLE_REASONS, HealthRule, unusable_reason
from consumer.sinks.errors import Retryable

log = logging.getLogger(__name__)


class UnusableRules:
    """Rules seen that no evaluator can run, by reason: each rule counted and logged once
    per process (a refresh every minute must not repeat it), whatever its later loads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[int, str]] = set()
        self._counts: Counter[str] = Counter()

    def usable(self, rules: Iterable[HealthRule]) -> list[HealthRule]:
        """The rules that can be evaluated; the others are counted and logged."""
        kept = []
        for rule in rules:
            reason = unusable_reason(rule)
            if reason is None:
                kept.append(rule)
                continue
            with self._lock:
                if (rule.id, reason) in self._seen:
                    continue
                self._seen.add((rule.id, reason))
                self._counts[reason] += 1
            log.warning(
                "alert rule %s is not evaluated: %s (rule_type=%r, physical_sign=%r)",
                rule.id,
                reason,
                rule.rule_type,
                rule.physical_sign,
                extra={"reason": reason, "rule_id": rule.id},
            )
        return kept

    def counts(self) -> dict[str, int]:
        """Every reason, 0 included, so dashboards show 0 instead of no data."""
        with self._lock:
            return {reason: self._counts[reason] for reason in UNUSABLE_REASONS}


# The replica's one tally, which the Prometheus collector reads (one RuleCache per replica).
UNUSABLE_RULES = UnusableRules()


class RuleCache:
    def __init__(
        self,
        engine: Engine,
        refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
        unusable: UnusableRules = UNUSABLE_RULES,
    ) -> None:
        self._engine = engine
        self._unusable = unusable
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: list[HealthRule] = []
        self._loaded = False  # one load has succeeded: its rules are good to keep
        self._loaded_at: float | None = None  # None: a load is due now

    def rules(self) -> list[HealthRule]:
        now = self._clock()
        if self._fresh(now):
            return self._rules
        # Only one worker refreshes; the others keep using the current list meanwhile
        # (until one load has succeeded there is no current list: they wait for it).
        if self._lock.acquire(blocking=not self._loaded):
            try:
                if not self._fresh(now):
                    self._refresh(now)
            finally:
                self._lock.release()
        return self._rules

    def _fresh(self, now: float) -> bool:
        return (
            self._loaded and self._loaded_at is not None and now - self._loaded_at < self._refresh_s
        )

    def invalidate(self) -> None:
        """Reload on next use (a rules-changed message, a Redis re-subscribe). Never undoes
        the "never loaded" guard: before the first load a failure still holds the flush."""
        self._loaded_at = None

    def _refresh(self, now: float) -> None:
        """Load the rules. Until one load has succeeded a failure is an outage the flush
        retries (evaluating no rules would commit batches without their alerts); after
        that, a failed refresh keeps the last good rules until the next interval."""
        try:
            rules = load_rules(self._engine)
        except (exc.DBAPIError, exc.TimeoutError) as err:
            if not self._loaded:
                cause = getattr(err, "orig", None) or err
                raise Retryable(f"alert rules not loaded yet: {cause}") from err
            log.warning("alert rule refresh failed, keeping %d rules: %s", len(self._rules), err)
        else:
            self._rules, self._loaded = self._unusable.usable(rules), True
        self._loaded_at = now


def load_rules(engine: Engine) -> list[HealthRule]:
    """Every live rule, whatever its type: which ones can run is `UnusableRules`' call."""
    c = alert_rules.c
    # As the legacy applies them: enabled and not soft-deleted (a NULL is_deleted is live).
    live = (c.is_enabled == 1) & ((c.is_deleted == 0) | c.is_deleted.is_(None))
    query = select(alert_rules).where(live).order_by(c.id)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        HealthRule(
            id=int(row["id"]),
            rule_type=row["rule_type"],
            physical_sign=row["physical_sign"],
            threshold_min=_dec(row["threshold_min"]),
            threshold_max=_dec(row["threshold_max"]),
            trend_duration=max(1, int(row["trend_duration"] or 1)),
            severity_level=row["severity_level"] or "minor",
            alert_message=row["alert_message"],
            customer_id=int(row["customer_id"] or 0),
            level=row["level"],
        )
        for row in rows
    ]


def _dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))
