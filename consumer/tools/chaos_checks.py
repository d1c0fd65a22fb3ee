"""Invariants of a chaos run, computed from what was produced and read back from the stores.

Every expectation comes from the planned workload (chaos_workload), never from the
consumer's own counters: a pipeline that lost a reading and also forgot to count it must
still fail here. Each check returns one table row: expected, actual, violations, samples.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from sqlalchemy import Engine, text

from consumer.pipeline.intake import DeviceClock
from consumer.sinks.mysql_rows import (
    DAILY_FIELDS,
    WEEKLY_FIELDS,
    daily_rows,
    legacy_upload_method,
    weekly_rows,
)
from consumer.sinks.redis import LATEST_KEY
from consumer.sinks.redis_hash import legacy_hash
from consumer.tools.chaos_workload import CRAFTED, Planned
from schemas.decode import decode_message_reference
from schemas.record import HealthRecord

SAMPLES = 5


@dataclass(slots=True)
class Invariant:
    name: str
    expected: int
    actual: int
    violations: int
    samples: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "expected": self.expected,
            "actual": self.actual,
            "violations": self.violations,
            "samples": self.samples,
            "note": self.note,
        }


def _ts(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")


@dataclass(slots=True)
class Expected:
    """What the valid part of the workload implies, computed once for all checks."""

    records: dict[tuple[str, dt.datetime], HealthRecord]
    produced_at: dict[tuple[str, dt.datetime], float]
    alerts: set[tuple[str, str, dt.datetime]]
    dead: dict[tuple[int, int], Planned]
    by_offset: dict[tuple[int, int], Planned]
    disagreements: list[str]

    @classmethod
    def from_workload(cls, planned: list[Planned], rule_types: list[str]) -> Expected:
        records: dict[tuple[str, dt.datetime], HealthRecord] = {}
        produced_at: dict[tuple[str, dt.datetime], float] = {}
        alerts: set[tuple[str, str, dt.datetime]] = set()
        disagreements: list[str] = []
        for p in planned:
            if p.offset < 0:
                continue  # never delivered: nothing can be expected of it
            for sn, rule, ts in p.alerts:
                alerts.add((sn, rule_types[rule], _ts(ts)))
            if not p.readings:
                continue
            # The reference (pydantic) decoder is the contract: it gives the normalized
            # values; which readings are valid comes from the plan, and must agree.
            # The consumer's own fallback for a reading without a timestamp: the message
            # time in DEVICE_TIMEZONE (UTC in the chaos stack).
            default = None if p.timestamp_ms is None else _UTC_CLOCK(p.timestamp_ms)
            decoded = decode_message_reference(p.value, default_timestamp=default)
            keys = {(r.device_sn, r.timestamp) for r in decoded.records}
            planned_keys = {(sn, _ts(ts)) for sn, ts in p.readings}
            if keys != planned_keys:
                disagreements.append(f"{p.kind} p{p.partition}@{p.offset}: plan != reference")
            for r in decoded.records:
                records[(r.device_sn, r.timestamp)] = r
                produced_at[(r.device_sn, r.timestamp)] = p.produced_at
        by_offset = {(p.partition, p.offset): p for p in planned if p.offset >= 0}
        dead = {k: p for k, p in by_offset.items() if p.reasons}
        return cls(records, produced_at, alerts, dead, by_offset, disagreements)


_UTC_CLOCK = DeviceClock(ZoneInfo("UTC"))


def _rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).all())


def check_health_rows(engine: Engine, exp: Expected) -> list[Invariant]:
    rows = _rows(
        engine,
        "SELECT id, device_sn, timestamp, upload_method, upload_method_raw, heart_rate "
        "FROM t_user_health_data ORDER BY id",
    )
    seen = Counter((r.device_sn, r.timestamp) for r in rows)
    expected = set(exp.records)
    missing = sorted(expected - seen.keys())
    extra = sorted(seen.keys() - expected)
    dups = [k for k, n in seen.items() if n > 1]
    once = Invariant(
        "health rows: every valid reading exactly once",
        len(expected),
        len(rows),
        len(missing) + len(extra) + len(dups),
        [f"missing {sn}@{ts}" for sn, ts in missing[:SAMPLES]]
        + [f"extra {sn!r}@{ts}" for sn, ts in extra[:SAMPLES]]
        + [f"duplicate {sn}@{ts}" for sn, ts in dups[:SAMPLES]],
        f"missing={len(missing)} extra={len(extra)} duplicates={len(dups)}",
    )
    wrong = []
    for r in rows:
        want = exp.records.get((r.device_sn, r.timestamp))
        # The ENUM column holds the legacy mapping, the raw column what the device sent.
        if want is not None and (
            r.upload_method != legacy_upload_method(want.upload_method)
            or r.upload_method_raw != want.upload_method
            or r.heart_rate != want.heart_rate
        ):
            wrong.append(
                f"{r.device_sn}@{r.timestamp}: upload_method={r.upload_method!r}/"
                f"{r.upload_method_raw!r} heart_rate={r.heart_rate} want "
                f"{legacy_upload_method(want.upload_method)!r}/{want.upload_method!r}/"
                f"{want.heart_rate}"
            )
    values = Invariant(
        "health rows: values byte-exact (SN, upload_method + raw, heart_rate)",
        len(expected),
        len(rows) - len(extra),
        len(wrong),
        wrong[:SAMPLES],
    )
    last: dict[str, tuple[int, dt.datetime]] = {}
    disorder = []
    for r in rows:
        prev = last.get(r.device_sn)
        if prev is not None and r.timestamp <= prev[1]:
            disorder.append(
                f"{r.device_sn}: id {r.id} @{r.timestamp} after id {prev[0]} @{prev[1]}"
            )
        last[r.device_sn] = (r.id, r.timestamp)
    order = Invariant(
        "per-device order: ids increase with reading time",
        len(last),
        len(last) - len({s.split(":")[0] for s in disorder}),
        len(disorder),
        disorder[:SAMPLES],
    )
    return [once, values, order]


def _json_equal(stored: Any, want: str | None) -> bool:
    if want is None or stored is None:
        return stored is None and want is None
    return bool(orjson.loads(stored) == orjson.loads(want))


def check_slow_rows(engine: Engine, exp: Expected) -> list[Invariant]:
    records = list(exp.records.values())
    out = []
    specs = (
        ("daily", "t_user_health_data_daily", "date", DAILY_FIELDS, daily_rows(records)),
        ("weekly", "t_user_health_data_weekly", "week_start", WEEKLY_FIELDS, weekly_rows(records)),
    )
    for label, table, period, fields, want_rows in specs:
        cols = ", ".join((*fields, "data_timestamp", "customer_id", "org_id", "user_id"))
        got = {
            (r[0], r[1]): r
            for r in _rows(engine, f"SELECT device_sn, {period}, {cols} FROM {table}")
        }
        want = {(w.device_sn, w.period): w for w in want_rows}
        problems = [f"missing {k[0]}@{k[1]}" for k in sorted(want.keys() - got.keys())]
        problems += [f"extra {k[0]}@{k[1]}" for k in sorted(got.keys() - want.keys())]
        for key in sorted(want.keys() & got.keys()):
            w, row = want[key], got[key]
            bad = [f for i, f in enumerate(fields) if not _json_equal(row[2 + i], w.fields[f])]
            if row[2 + len(fields)] != w.data_timestamp:
                bad.append(f"data_timestamp {row[2 + len(fields)]} != {w.data_timestamp}")
            parties = tuple(row[3 + len(fields) :])
            if parties != tuple(w.parties[p] for p in ("customer_id", "org_id", "user_id")):
                bad.append(f"parties {parties}")
            if bad:
                problems.append(f"{key[0]}@{key[1]}: {', '.join(bad)}")
        out.append(
            Invariant(
                f"{label} rows match the valid readings",
                len(want),
                len(got),
                len(problems),
                problems[:SAMPLES],
            )
        )
    return out


def check_alerts(engine: Engine, exp: Expected) -> Invariant:
    # Rules are per customer (one row per simulated customer): match by rule type.
    rows = _rows(engine, "SELECT device_sn, alert_type, alert_timestamp FROM t_alert_info")
    seen = Counter((r[0], str(r[1]), r[2]) for r in rows)
    missing = sorted(exp.alerts - seen.keys())
    extra = sorted(seen.keys() - exp.alerts)
    dups = [k for k, n in seen.items() if n > 1]
    return Invariant(
        "alerts: once per (device, rule, reading)",
        len(exp.alerts),
        len(rows),
        len(missing) + len(extra) + len(dups),
        [f"missing {k}" for k in missing[:SAMPLES]]
        + [f"extra {k}" for k in extra[:SAMPLES]]
        + [f"duplicate {k}" for k in dups[:SAMPLES]],
        f"missing={len(missing)} extra={len(extra)} duplicates={len(dups)}",
    )


def check_redis(url: str, exp: Expected, redis_back_at: float | None) -> Invariant:
    """Newest reading per device. Redis keeps nothing across a restart, so after one only
    devices whose newest reading was produced after Redis came back can be held to it;
    for the others a present hash must at least not claim a reading newer than the newest."""
    newest: dict[str, HealthRecord] = {}
    for record in exp.records.values():
        cur = newest.get(record.device_sn)
        if cur is None or record.timestamp > cur.timestamp:
            newest[record.device_sn] = record
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        pipe = client.pipeline(transaction=False)
        sns = sorted(newest)
        for sn in sns:
            pipe.hgetall(LATEST_KEY.format(sn))
        hashes = dict(zip(sns, pipe.execute(), strict=True))
    finally:
        client.close()
    problems: list[str] = []
    exempt = exempt_missing = 0
    for sn, record in newest.items():
        got: dict[str, str] = hashes[sn]
        want = legacy_hash(record)
        after_restart = redis_back_at is None or (
            exp.produced_at[(sn, record.timestamp)] >= redis_back_at
        )
        if not after_restart:
            exempt += 1
            exempt_missing += not got
            if got and got.get("timestamp", "") > want["timestamp"]:
                problems.append(f"{sn}: holds {got.get('timestamp')} > newest {want['timestamp']}")
            continue
        diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
        if diff:
            problems.append(f"{sn}: {dict(list(diff.items())[:3])}")
    note = ""
    if redis_back_at is not None:
        note = (
            f"{exempt} devices had no reading after the Redis restart (not checked: Redis has "
            f"no persistence); {exempt_missing} of them have no hash"
        )
    return Invariant(
        "redis: newest reading of every device",
        len(newest) - exempt,
        len(newest) - exempt - len(problems),
        len(problems),
        problems[:SAMPLES],
        note,
    )


def read_topic(bootstrap: str, topic: str, timeout_s: float = 120.0) -> list[Any]:
    """Every message of `topic` from the beginning up to its current end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in meta.partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        out: list[Any] = []
        pos = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + timeout_s
        while any(pos[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=1.0):
                if m.error() is None:
                    out.append(m)
                    pos[m.partition() or 0] = (m.offset() or 0) + 1
        return out
    finally:
        consumer.close()


def check_dlq(bootstrap: str, dlq_topic: str, exp: Expected) -> tuple[Invariant, dict[str, Any]]:
    letters = read_topic(bootstrap, dlq_topic)
    seen: dict[tuple[int, int], list[str]] = defaultdict(list)
    problems: list[str] = []
    for m in letters:
        headers = {k: (v or b"").decode("utf-8", "replace") for k, v in m.headers() or []}
        try:
            src = (int(headers["source.partition"]), int(headers["source.offset"]))
        except (KeyError, ValueError):
            problems.append(f"dead letter without source headers at dlq offset {m.offset()}")
            continue
        reason = headers.get("error.reason", "")
        seen[src].append(reason)
        planned = exp.by_offset.get(src)
        if planned is not None and (m.key() != planned.key or m.value() != planned.value):
            problems.append(f"p{src[0]}@{src[1]}: key/value differ from the original")
    for src, reasons in sorted(seen.items()):
        planned = exp.dead.get(src)
        if planned is None:
            kind = exp.by_offset[src].kind if src in exp.by_offset else "unknown offset"
            problems.append(f"unexpected p{src[0]}@{src[1]} ({kind}): {reasons[0]}")
        elif any(r not in planned.reasons for r in reasons):
            problems.append(
                f"wrong reason p{src[0]}@{src[1]} ({planned.kind}): {reasons} "
                f"want {sorted(planned.reasons)}"
            )
    missing = [p for k, p in exp.dead.items() if k not in seen]
    problems += [f"missing p{p.partition}@{p.offset} ({p.kind})" for p in missing[:SAMPLES]]
    duplicates = sum(len(r) - 1 for r in seen.values())
    by_reason = Counter(r[0] for r in seen.values())
    inv = Invariant(
        "dlq: exactly the bad messages, right reason",
        len(exp.dead),
        len(seen),
        len(problems) + max(0, len(missing) - SAMPLES),
        problems[:SAMPLES],
        f"{len(letters)} dead letters, {duplicates} duplicate source offsets "
        "(allowed: dead letters are produced at least once, a replay after kill -9 resends)",
    )
    return inv, {
        "dead_letters": len(letters),
        "distinct_sources": len(seen),
        "duplicates": duplicates,
        "by_reason": dict(by_reason),
    }


def committed_and_end(
    bootstrap: str, group: str, topic: str, partitions: int, timeout_s: float = 10.0
) -> tuple[dict[int, int], dict[int, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 2})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=timeout_s)}
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for p in range(partitions)
        }
        return committed, ends
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """High watermarks only: unlike committed offsets, no group coordinator is needed."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"chaos-{uuid.uuid4().hex}", "log_level": 2}
    )
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def check_offsets(
    bootstrap: str, group: str, topic: str, partitions: int, exp: Expected
) -> Invariant:
    """Committed == end; a partition left behind names the message it is stuck on."""
    committed, ends = committed_and_end(bootstrap, group, topic, partitions)
    bad = []
    for p, end in sorted(ends.items()):
        at = committed.get(p)
        if at == end:
            continue
        # The batch that failed starts at the committed offset; name the likeliest culprit
        # after it: a crafted input first, else the first message that is not plain data.
        start = max(0, at or 0)
        after = [m for o in range(start, end) if (m := exp.by_offset.get((p, o))) is not None]
        stuck = next((m for m in after if m.kind in CRAFTED or m.kind == "f5_percent"), None)
        stuck = stuck or next((m for m in after if m.kind != "valid"), None)
        what = (
            ""
            if stuck is None
            else f": likely stuck on {stuck.kind} at {stuck.offset} "
            f"key={stuck.key[:40]!r} value={stuck.value[:60]!r}..."
        )
        bad.append(f"p{p}: committed {at} end {end}{what}")
    return Invariant(
        "committed offsets == end offsets",
        sum(ends.values()),
        sum(max(0, c) for c in committed.values()),
        len(bad),
        bad[:12],
    )
