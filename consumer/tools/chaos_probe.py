"""One crafted input at a time through one fresh replica: which input breaks what.

In the chaos run a poison message crash-loops a replica and hides the inputs behind it;
here each case gets its own one-partition topic, followed by one ordinary reading, so the
outcome (stored, dead-lettered with a reason, or the exception that killed the replica)
belongs to that input alone. `python -m consumer.tools.chaos --probe`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, text

from consumer.tools.chaos_checks import committed_and_end, read_topic
from consumer.tools.chaos_stack import PrivateStack, crash_signature, free_port, log_tail
from consumer.tools.chaos_workload import (
    CRAFTED,
    F5_METHODS,
    F5_SNS,
    Planned,
    WorkloadBuilder,
    WorkloadSpec,
)
from consumer.tools.replicas import ReplicaProcess
from consumer.tools.simulate import SIMULATED_CUSTOMERS
from consumer.topics import admin_client, ensure_topic
from schemas.publish import make_producer

CASE_TIMEOUT_S = 40.0


@dataclass(slots=True)
class ProbeResult:
    case: str
    key: str
    value: str  # the first bytes, for the report
    expected: str
    outcome: str
    ok: bool
    log_lines: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def probe_cases(seed: int) -> list[Planned]:
    """Every crafted poison kind once, and every F5 SN and upload method once."""
    builder = WorkloadBuilder(WorkloadSpec(seed=seed, devices=10, readings=0))
    cases = [builder._poison(kind) for kind in CRAFTED]
    for sn, method in zip(F5_SNS, F5_METHODS, strict=True):
        device = next(d for d in builder.f5_devices if d.sn == sn)
        reading = builder.gen._reading(device)
        reading["upload_method"] = method
        ts = reading.get("timestamp") or reading["cjsj"]
        cases.append(
            Planned(sn.encode(), orjson.dumps({"data": reading}), f"f5 {sn} {method}", [(sn, ts)])
        )
    return cases


def _env(bootstrap: str, topic: str, database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_TOPIC": topic,
        "DLQ_TOPIC": f"{topic}.dlq",
        "KAFKA_GROUP_ID": f"{topic}-group",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LOG_FORMAT": "json",
        "BATCH_MAX_WAIT_MS": "100",
    }


def _wait_committed(bootstrap: str, group: str, topic: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            committed, ends = committed_and_end(bootstrap, group, topic, 1, 2)
            if committed.get(0) == ends[0]:
                return True
        except Exception:
            pass
        time.sleep(0.5)
    return False


def probe_rules_outage(
    stack: PrivateStack, database_url: str, engine: Engine, log_dir: Path, seed: int
) -> ProbeResult:
    """A replica whose first alert-rule load meets a DB outage must still alert once the
    DB is back: start it idle, stop MariaDB, send one violating reading, restart MariaDB."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE t_alert_rules SET is_enabled = 0"))
        conn.execute(
            text(
                "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_max, "
                "trend_duration, severity_level, customer_id) "
                "VALUES ('probe_hr', 'heart_rate', 150, 1, 'warning', :c)"
            ),
            [{"c": c} for c in (0, *SIMULATED_CUSTOMERS)],
        )
    topic = f"probe-rules-{uuid.uuid4().hex[:8]}"
    ensure_topic(admin_client(stack.bootstrap), topic, 1)
    env = _env(stack.bootstrap, topic, database_url, stack.redis_url)
    log_path = log_dir / "probe-rules-outage.log"
    replica = ReplicaProcess(env=env, log_path=log_path, port=free_port()).start()
    builder = WorkloadBuilder(WorkloadSpec(seed=seed + 2, devices=1, readings=0))
    reading = builder.gen._reading(builder.gen.fleet[0])
    for k in ("xlv", "heart_rate"):
        reading.pop(k, None)
    reading["heart_rate"] = 180
    sn, ts = reading["deviceSn"], reading.get("timestamp") or reading["cjsj"]
    try:
        replica.wait_ready(60)
        stack.services("down", "mariadb")
        producer = make_producer(stack.bootstrap)
        producer.produce(topic, key=sn.encode(), value=orjson.dumps({"data": reading}))
        producer.flush(30)
        time.sleep(5)  # the first flush loads the rules now, and fails
    finally:
        stack.services("up", "mariadb")
    committed = _wait_committed(stack.bootstrap, env["KAFKA_GROUP_ID"], topic, 60)
    replica.stop(30)
    with engine.connect() as conn:
        alerts = conn.execute(
            text(
                "SELECT COUNT(*) FROM t_alert_info WHERE device_sn = :sn AND alert_timestamp = :ts"
            ),
            {"sn": sn, "ts": ts},
        ).scalar()
    outcome = f"committed={committed}, alerts stored={alerts}"
    ok = committed and alerts == 1
    return ProbeResult(
        "alert rules vs DB outage",
        sn,
        f"heart_rate=180 at {ts}, rule heart_rate>150 trend 1, MariaDB down at the first flush",
        "one alert once the DB is back",
        outcome,
        ok,
        [] if ok else log_tail(log_path, keep=4),
    )


def run_probe(
    bootstrap: str, database_url: str, redis_url: str, engine: Engine, log_dir: Path, seed: int
) -> list[ProbeResult]:
    results = []
    admin = admin_client(bootstrap)
    builder = WorkloadBuilder(WorkloadSpec(seed=seed + 1, devices=1, readings=0))
    for i, case in enumerate(probe_cases(seed)):
        topic = f"probe-{uuid.uuid4().hex[:8]}-{i}"
        ensure_topic(admin, topic, 1)
        sentinel = builder._valid()
        producer = make_producer(bootstrap)
        for message in (case, sentinel):
            producer.produce(topic, key=message.key, value=message.value)
        producer.flush(30)
        env = _env(bootstrap, topic, database_url, redis_url)
        log_path = log_dir / f"probe-{i}.log"
        replica = ReplicaProcess(env=env, log_path=log_path, port=free_port()).start()
        deadline = time.monotonic() + CASE_TIMEOUT_S
        outcome = "timeout: neither committed nor crashed"
        crashed = False
        while time.monotonic() < deadline:
            if replica.proc is not None and replica.proc.poll() is not None:
                crashed = True
                outcome = f"CRASH exit {replica.proc.returncode}: {crash_signature(log_path)[0]}"
                break
            try:
                committed, ends = committed_and_end(bootstrap, env["KAFKA_GROUP_ID"], topic, 1, 2)
            except Exception:
                committed, ends = {}, {0: -1}
            if committed.get(0) == ends[0]:
                outcome = _handled(bootstrap, env["DLQ_TOPIC"], engine, case)
                break
            time.sleep(0.5)
        replica.stop(30)
        if outcome.startswith("timeout"):
            outcome += _last_warning(log_path)
        expected = f"dead letter {sorted(case.reasons)}" if case.reasons else "stored byte-exact"
        ok = not crashed and (
            outcome.startswith("dead letter") and outcome.split(" ")[2] in case.reasons
            if case.reasons
            else outcome == "stored byte-exact"
        )
        results.append(
            ProbeResult(
                case.kind,
                case.key.decode("utf-8", "backslashreplace")[:40],
                case.value[:100].decode("utf-8", "backslashreplace"),
                expected,
                outcome,
                ok,
                [] if ok else log_tail(log_path, keep=4),
            )
        )
    return results


def _last_warning(path: Path) -> str:
    """Why a stuck replica neither committed nor crashed: its last warning, if any."""
    for line in reversed(log_tail(path, lines=400, keep=400)):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if entry.get("level") == "WARNING":
            return f"; last warning: {entry.get('msg')}: {str(entry.get('error', ''))[:120]}"
    return ""


def _handled(bootstrap: str, dlq_topic: str, engine: Engine, case: Planned) -> str:
    letters = [m for m in read_topic(bootstrap, dlq_topic, 20) if m.offset() is not None]
    for m in letters:
        headers = {k: (v or b"").decode() for k, v in m.headers() or []}
        if headers.get("source.offset") == "0":
            detail = headers.get("error.detail", "")[:80]
            return f"dead letter {headers.get('error.reason')} ({detail})"
    if not case.readings:
        return "committed, but neither stored nor dead-lettered"
    sn, ts = case.readings[0]
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT device_sn, upload_method FROM t_user_health_data "
                "WHERE device_sn = :sn AND timestamp = :ts"
            ),
            {"sn": sn, "ts": ts},
        ).all()
    if not rows:
        with engine.connect() as conn:
            near = conn.execute(
                text(
                    "SELECT device_sn, upload_method FROM t_user_health_data WHERE timestamp = :ts"
                ),
                {"ts": ts},
            ).all()
        stored = ", ".join(repr((r[0], r[1])) for r in near) or "nothing"
        return f"committed, no row for {sn!r}; at that time the table holds {stored}"
    method = orjson.loads(case.value)["data"]["upload_method"]
    got = (rows[0][0], rows[0][1])
    return "stored byte-exact" if got == (sn, method) else f"stored as {got!r}"
