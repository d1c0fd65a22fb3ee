"""`make chaos`: a workload through several replicas while faults hit them, then invariants.

Runs on a private stack (scripts/services.sh on other ports) because it stops MariaDB,
Redis and the broker. The fault schedule and the workload come from one seed, printed
first and last, so `--seed N` replays the same messages and the same schedule (timings
are wall-clock, so a replay is close, not identical). Exit code 1 when an invariant fails.

    python -m consumer.tools.chaos [--profile long|short] [--seed N] [--no-crafted]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, create_engine, text

from consumer.db.migrate import upgrade_to_head
from consumer.tools.chaos_checks import (
    Expected,
    Invariant,
    check_alerts,
    check_dlq,
    check_health_rows,
    check_offsets,
    check_redis,
    check_slow_rows,
    committed_and_end,
    end_offsets,
)
from consumer.tools.chaos_probe import probe_rules_outage, run_probe
from consumer.tools.chaos_stack import ROOT, Crash, Fleet, PrivateStack, StackPorts
from consumer.tools.chaos_workload import (
    ALERT_RULES,
    TREND_CUSTOMER,
    TREND_RULE,
    TREND_RULE_INDEX,
    Planned,
    Producer,
    WorkloadBuilder,
    WorkloadSpec,
)
from consumer.tools.simulate import SIMULATED_CUSTOMERS
from consumer.topics import admin_client, ensure_topic

PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    readings: int
    devices: int
    partitions: int
    replicas: int
    faults: tuple[str, ...]  # the middle of the schedule, shuffled by the seed
    drain_timeout_s: float
    outage_s: float = 20.0
    storm_s: float = 60.0


PROFILES = {
    "long": Profile(
        "long",
        readings=200_000,
        devices=500,
        partitions=12,
        replicas=3,
        faults=("kill9", "kill9", "kill9", "db_outage", "redis_outage", "broker_restart", "storm"),
        drain_timeout_s=600,
    ),
    "short": Profile(
        "short",
        readings=20_000,
        devices=200,
        partitions=12,
        replicas=2,
        faults=("kill9", "db_outage", "kill9"),
        drain_timeout_s=120,
    ),
}


def log(msg: str) -> None:
    print(f"[chaos] {msg}", flush=True)


@dataclass(slots=True)
class Event:
    at_s: float
    name: str
    detail: str
    seconds: float = 0.0


@dataclass
class Run:
    """One chaos run: stack, fleet, producer and the fault schedule driving them."""

    profile: Profile
    seed: int
    crafted: bool
    stack: PrivateStack
    run_dir: Path
    rng: random.Random
    planned: list[Planned] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    redis_back_at: float | None = None
    crash_kinds: dict[str, int] = field(default_factory=dict)
    restarts: list[tuple[str, int, int]] = field(default_factory=list)  # service, before, after
    step: str = "setup"
    started: float = field(default_factory=time.monotonic)
    _next_progress: float = 0.0

    def __post_init__(self) -> None:
        run_id = f"{self.seed}-{uuid.uuid4().hex[:6]}"
        self.topic = f"chaos-{run_id}"
        self.dlq_topic = f"{self.topic}.dlq"
        self.group = f"chaos-group-{run_id}"
        self.database = f"chaos_{run_id.replace('-', '_')}"

    # --- helpers ------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def event(self, name: str, detail: str = "", seconds: float = 0.0) -> None:
        self.events.append(Event(round(self.elapsed(), 1), name, detail, round(seconds, 1)))
        log(f"+{self.elapsed():6.1f}s {name} {detail}".rstrip())

    def wait(self, seconds: float) -> None:
        """Sleep while watching for crashed replicas and printing progress."""
        end = time.monotonic() + seconds
        while True:
            for crash in self.fleet.check():
                # A crash loop repeats one error: print each distinct one once.
                if crash.signature not in self.crash_kinds:
                    where = "" if crash.partition is None else f" (worker of p{crash.partition})"
                    self.event(
                        "CRASH",
                        f"{crash.replica} exited {crash.exit_code}{where}: {crash.signature[:200]}"
                        " (restarted with backoff; repeats counted, not printed)",
                    )
                self.crash_kinds[crash.signature] = self.crash_kinds.get(crash.signature, 0) + 1
            now = time.monotonic()
            if now >= self._next_progress:
                self._next_progress = now + PROGRESS_EVERY_S
                self.progress()
            if now >= end:
                return
            time.sleep(min(0.5, end - now))

    def progress(self) -> None:
        lag = rows = "?"
        try:
            committed, ends = committed_and_end(
                self.stack.bootstrap, self.group, self.topic, self.profile.partitions, 2.0
            )
            lag = str(sum(e - max(0, committed.get(p, 0)) for p, e in ends.items()))
        except Exception:
            pass
        try:
            with self.probe_engine.connect() as conn:
                rows = str(conn.execute(text("SELECT COUNT(*) FROM t_user_health_data")).scalar())
        except Exception:
            pass
        log(
            f"+{self.elapsed():6.1f}s step={self.step} sent={self.producer.sent}/"
            f"{len(self.planned)} acked={self.producer.delivered} rows={rows} lag={lag} "
            f"replicas={len(self.fleet.running())}/{self.fleet.wanted()} "
            f"crashes={len(self.fleet.crashes)}"
        )

    # --- setup --------------------------------------------------------------------------

    def build_workload(self) -> None:
        t0 = time.monotonic()
        spec = WorkloadSpec(
            seed=self.seed,
            devices=self.profile.devices,
            readings=self.profile.readings,
            crafted=self.crafted,
        )
        self.planned = WorkloadBuilder(spec).build()
        self.durations["workload_build_s"] = time.monotonic() - t0
        readings = sum(len(p.readings) for p in self.planned)
        bad = sum(1 for p in self.planned if p.reasons)
        log(
            f"workload: {len(self.planned)} messages, {readings} valid readings, "
            f"{bad} to dead-letter, crafted={'on' if self.crafted else 'off'} "
            f"({self.durations['workload_build_s']:.1f}s)"
        )

    def setup(self) -> None:
        self.stack.check_ports_private()
        log(f"private stack up: {self.stack.runtime_dir} ports {self.stack.ports}")
        self.durations["stack_up_s"] = self.stack.services("up")
        drop_previous_runs(self.stack)
        root = create_engine(self.stack.database_url(""), pool_pre_ping=True)
        with root.begin() as conn:
            conn.execute(text(f"CREATE DATABASE {self.database} CHARACTER SET utf8mb4"))
        root.dispose()
        url = self.stack.database_url(self.database)
        upgrade_to_head(url)
        self.engine: Engine = create_engine(url, pool_pre_ping=True)
        # Progress lines must not hang for the length of a DB outage.
        self.probe_engine = create_engine(url, connect_args={"connect_timeout": 2})
        self.rule_types = [rule_type for rule_type, _, _ in ALERT_RULES] + [TREND_RULE[0]]
        # Rules are scoped by customer, as the legacy applies them: one set per customer the
        # simulator's devices belong to, so every violating reading has its rule.
        with self.engine.begin() as conn:
            for customer in SIMULATED_CUSTOMERS:
                for rule_type, sign, high in ALERT_RULES:
                    conn.execute(
                        text(
                            "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_max, "
                            "trend_duration, severity_level, alert_message, customer_id) "
                            "VALUES (:t, :s, :h, 1, 'warning', :t, :c)"
                        ),
                        {"t": rule_type, "s": sign, "h": high, "c": customer},
                    )
            conn.execute(
                text(
                    "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_min, "
                    "trend_duration, severity_level, alert_message, customer_id) "
                    "VALUES (:t, :s, :lo, :n, 'warning', :t, :c)"
                ),
                {
                    "t": TREND_RULE[0],
                    "s": TREND_RULE[1],
                    "lo": TREND_RULE[2],
                    "n": TREND_RULE[3],
                    "c": TREND_CUSTOMER,
                },
            )
        client = redis.Redis.from_url(self.stack.redis_url)
        client.flushdb()
        client.close()
        admin = admin_client(self.stack.bootstrap)
        for attempt in range(30):  # a broker that just started may not list a new topic yet
            try:
                ensure_topic(admin, self.topic, self.profile.partitions)
                break
            except RuntimeError:
                if attempt == 29:
                    raise
                time.sleep(1)
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.stack.bootstrap,
            "KAFKA_TOPIC": self.topic,
            "DLQ_TOPIC": self.dlq_topic,
            "KAFKA_GROUP_ID": self.group,
            "DATABASE_URL": url,
            "REDIS_URL": self.stack.redis_url,
            "LOG_FORMAT": "json",
            "BATCH_MAX_WAIT_MS": "200",
            "METRICS_SUMMARY_INTERVAL_S": "60",
        }
        self.fleet = Fleet(env, self.run_dir / "replicas", self.rng)
        self.producer = Producer(self.stack.bootstrap, self.topic, self.planned)

    # --- faults -------------------------------------------------------------------------

    def scale_to(self, n: int) -> None:
        while self.fleet.wanted() < n:
            r = self.fleet.add()
            self.event("scale_up", f"{r.name} started ({len(self.fleet.running())} running)")
        while len(self.fleet.running()) > n:
            victim = self.fleet.pick()
            assert victim is not None
            t0 = time.monotonic()
            code = victim.terminate()
            self.event("scale_down", f"{victim.name} SIGTERM exit={code}", time.monotonic() - t0)

    def kill9(self) -> None:
        r = self.fleet.pick()
        if r is None:
            self.event("kill9_skipped", "no replica running")
            return
        r.kill9()
        down = self.rng.uniform(2, 6)
        self.event("kill9", f"{r.name}, restart in {down:.1f}s")
        self.wait(down)
        r.start()
        self.event("restart", r.name)

    def data_size(self, service: str) -> int:
        """What a stop/start must keep: rows, topic end offsets, Redis keys (not kept).
        -1 when it cannot be read (then nothing is claimed either way)."""
        deadline = time.monotonic() + 30  # a broker just started needs a moment
        while True:
            try:
                return self._data_size(service)
            except Exception as exc:
                if time.monotonic() >= deadline:
                    log(f"    could not measure {service} data: {exc}")
                    return -1
                time.sleep(1)

    def _data_size(self, service: str) -> int:
        if service == "mariadb":
            with self.probe_engine.connect() as conn:
                count = conn.execute(text("SELECT COUNT(*) FROM t_user_health_data")).scalar()
                return int(count or 0)
        if service == "kafka":
            return sum(end_offsets(self.stack.bootstrap, self.topic, self.profile.partitions))
        client = redis.Redis.from_url(self.stack.redis_url, socket_timeout=5)
        try:
            return int(client.dbsize())
        finally:
            client.close()

    def restart_service(self, service: str, down_s: float) -> None:
        """`services.sh down SERVICE`, wait, `up SERVICE`; record whether its data survived."""
        before = self.data_size(service)
        t0 = time.monotonic()
        self.stack.services("down", service)
        self.event(f"{service}_down", "", time.monotonic() - t0)
        self.wait(down_s)
        t1 = time.monotonic()
        self.stack.services("up", service)
        if service == "redis":
            self.redis_back_at = time.monotonic()
        outage, up_s = time.monotonic() - t0, time.monotonic() - t1
        after = self.data_size(service)
        self.restarts.append((service, before, after))
        self.event(f"{service}_up", f"outage {outage:.1f}s, data {before} -> {after}", up_s)

    def outage(self, service: str) -> None:
        self.restart_service(service, self.profile.outage_s)

    def broker_restart(self) -> None:
        self.restart_service("kafka", self.rng.uniform(2, 5))

    def storm(self) -> None:
        """A replica joins and leaves every few seconds: a rebalance each time."""
        end = time.monotonic() + self.profile.storm_s
        cycles = 0
        while time.monotonic() < end:
            r = self.fleet.add()
            self.wait(self.rng.uniform(2, 5))
            if self.rng.random() < 0.3:
                r.kill9()
            else:
                r.terminate()
            cycles += 1
            self.wait(self.rng.uniform(1, 3))
        self.event("storm_end", f"{cycles} join/leave cycles")

    def schedule(self) -> list[tuple[str, Callable[[], None], float]]:
        """(name, action, settle seconds after it); the middle order comes from the seed."""
        p, rng = self.profile, self.rng
        steps: list[tuple[str, Callable[[], None], float]] = []
        if p.name == "long":
            steps += [
                ("scale_1", lambda: self.scale_to(1), rng.uniform(12, 18)),
                ("scale_3", lambda: self.scale_to(3), rng.uniform(12, 18)),
                ("scale_2", lambda: self.scale_to(2), rng.uniform(12, 18)),
                ("scale_3", lambda: self.scale_to(3), rng.uniform(8, 12)),
            ]
        else:
            steps.append(("start", lambda: self.scale_to(p.replicas), rng.uniform(6, 10)))
        actions: dict[str, Callable[[], None]] = {
            "kill9": self.kill9,
            "db_outage": lambda: self.outage("mariadb"),
            "redis_outage": lambda: self.outage("redis"),
            "broker_restart": self.broker_restart,
            "storm": self.storm,
        }
        middle = list(p.faults)
        if p.name == "long":  # the short profile keeps its order: kill, outage, kill
            rng.shuffle(middle)
        for name in middle:
            steps.append((name, actions[name], rng.uniform(6, 12)))
        return steps

    def estimate_s(self, steps: list[tuple[str, Callable[[], None], float]]) -> float:
        """Planned length of the fault phase: the producer spreads its load over it."""
        cost = {
            "kill9": 4,
            "db_outage": self.profile.outage_s + 12,
            "redis_outage": self.profile.outage_s + 3,
            "broker_restart": 25,
            "storm": self.profile.storm_s + 20,
        }
        return sum(settle + cost.get(name, 3) for name, _, settle in steps)

    # --- the run ------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        steps = self.schedule()
        load_s = self.estimate_s(steps)
        log(f"schedule: {' -> '.join(n for n, _, _ in steps)}; load spread over {load_s:.0f}s")
        producing = threading.Thread(
            target=self.producer.run, args=(load_s,), name="producer", daemon=True
        )
        t_run = time.monotonic()
        producing.start()
        try:
            for name, action, settle in steps:
                self.step = name
                action()
                self.wait(settle)
            self.step = "producing"
            while not self.producer.done.is_set():
                self.wait(1.0)
            self.scale_to(self.profile.replicas)
            self.durations["faults_and_load_s"] = time.monotonic() - t_run
            self.step = "drain"
            t_drain = time.monotonic()
            drained = self.drain()
            self.durations["drain_s"] = time.monotonic() - t_drain
            self.event(
                "drained" if drained else "drain_timeout", f"{self.durations['drain_s']:.1f}s"
            )
            self.fleet.check(restart=False)
            t_stop = time.monotonic()
            codes = self.fleet.stop_all()
            self.durations["sigterm_s"] = time.monotonic() - t_stop
            self.event("sigterm_all", " ".join(f"{k}={v}" for k, v in codes.items()))
        finally:
            self.producer.close()
            self.fleet.kill_all()
        t_check = time.monotonic()
        result = self.check(codes)
        self.durations["checks_s"] = time.monotonic() - t_check
        return result

    def drain(self) -> bool:
        """Wait until the group committed every offset (twice in a row), or time out."""
        deadline = time.monotonic() + self.profile.drain_timeout_s
        streak = 0
        while time.monotonic() < deadline:
            try:
                committed, ends = committed_and_end(
                    self.stack.bootstrap, self.group, self.topic, self.profile.partitions, 5.0
                )
                done = all(committed.get(p) == e for p, e in ends.items())
            except Exception:
                done = False
            streak = streak + 1 if done else 0
            if streak >= 2:
                return True
            self.wait(2.0)
        return False

    def check(self, exit_codes: dict[str, int | None]) -> dict[str, Any]:
        self.step = "checks"
        exp = Expected.from_workload(self.planned, self.rule_types)
        invariants: list[Invariant] = []
        undelivered = [p for p in self.planned if p.offset < 0]
        invariants.append(
            Invariant(
                "producer: every planned message acknowledged",
                len(self.planned),
                len(self.planned) - len(undelivered),
                len(undelivered) + len(exp.disagreements),
                [f"{p.kind}: {p.error}" for p in undelivered[:5]] + exp.disagreements[:5],
            )
        )
        invariants += check_health_rows(self.engine, exp)
        invariants += check_slow_rows(self.engine, exp)
        invariants.append(check_alerts(self.engine, exp))
        invariants.append(check_redis(self.stack.redis_url, exp, self.redis_back_at))
        dlq, dlq_stats = check_dlq(self.stack.bootstrap, self.dlq_topic, exp)
        invariants.append(dlq)
        invariants.append(
            check_offsets(
                self.stack.bootstrap, self.group, self.topic, self.profile.partitions, exp
            )
        )
        # MariaDB and the broker must keep their data across services.sh down/up; Redis has
        # no persistence, so its drop is reported in the timeline, not held against it.
        kept = [r for r in self.restarts if r[0] != "redis"]
        lost = [
            f"{svc}: {before} before the stop, {after} after"
            for svc, before, after in kept
            if after < before or after < 0
        ]
        invariants.append(
            Invariant(
                "services keep their data across stop/start",
                len(kept),
                len(kept) - len(lost),
                len(lost),
                lost,
                "; ".join(f"{s} {b} -> {a}" for s, b, a in self.restarts),
            )
        )
        crashes = self.fleet.crashes
        invariants.append(
            Invariant(
                "replicas: no crash (exit we did not cause)",
                0,
                len(crashes),
                len(crashes),
                [
                    f"{n}x {sig[:200]} (partitions {sorted(parts) or '-'})"
                    for sig, (n, parts) in crash_groups(crashes).items()
                ],
            )
        )
        unclean = {k: v for k, v in exit_codes.items() if v != 0}
        invariants.append(
            Invariant(
                "replicas: SIGTERM at the end exits 0",
                len(exit_codes),
                len(exit_codes) - len(unclean),
                len(unclean),
                [f"{k} exit {v}" for k, v in unclean.items()],
            )
        )
        return {
            "invariants": invariants,
            "dlq": dlq_stats,
            "crashes": [asdict(c) for c in crashes],
        }


def crash_groups(crashes: list[Crash]) -> dict[str, tuple[int, set[int]]]:
    """signature -> (how many crashes, partitions whose worker died of it)."""
    groups: dict[str, tuple[int, set[int]]] = {}
    for c in crashes:
        n, parts = groups.get(c.signature, (0, set()))
        if c.partition is not None:
            parts.add(c.partition)
        groups[c.signature] = (n + 1, parts)
    return groups


def drop_previous_runs(stack: PrivateStack) -> None:
    """The private stack keeps only the latest run's data (inspect it before the next run):
    without this, every long run would leave ~200 MB of topics and tables behind."""
    root = create_engine(stack.database_url(""))
    with root.begin() as conn:
        names = [r[0] for r in conn.execute(text("SHOW DATABASES LIKE 'chaos\\_%'"))]
        for name in names:
            conn.execute(text(f"DROP DATABASE `{name}`"))
    root.dispose()
    admin = admin_client(stack.bootstrap)
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(("chaos-", "probe-"))]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            try:
                future.result(60)
            except Exception as exc:  # a topic already gone is fine
                log(f"    could not delete a previous run's topic: {exc}")
    if names or topics:
        log(f"dropped the previous runs' data: {len(names)} databases, {len(topics)} topics")


def print_table(invariants: list[Invariant]) -> None:
    width = max(len(i.name) for i in invariants)
    log(f"{'invariant':<{width}}  {'expected':>9}  {'actual':>9}  {'violations':>10}  ok")
    for inv in invariants:
        log(
            f"{inv.name:<{width}}  {inv.expected:>9}  {inv.actual:>9}  {inv.violations:>10}  "
            f"{'yes' if inv.ok else 'NO'}"
        )
        for sample in inv.samples:
            log(f"{'':<{width}}    - {sample[:240]}")
        if inv.note:
            log(f"{'':<{width}}    ({inv.note})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="long")
    ap.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    ap.add_argument("--no-crafted", action="store_true", help="leave out the F1-F5 inputs")
    ap.add_argument("--readings", type=int, default=None, help="override the profile's count")
    ap.add_argument("--devices", type=int, default=None)
    ap.add_argument(
        "--stack-ports",
        type=StackPorts.parse,
        default=StackPorts(),
        help="kafka,controller,mariadb,redis (default 19092,19093,13306,16379)",
    )
    ap.add_argument("--runtime-dir", type=Path, default=ROOT / ".runtime" / "chaos")
    ap.add_argument("--keep-stack", action="store_true", help="leave the private stack up")
    ap.add_argument("--result", type=Path, default=None, help="JSON result (default: run dir)")
    ap.add_argument(
        "--probe",
        action="store_true",
        help="instead of a run: each crafted input (F1-F5) alone through a fresh replica, "
        "and the alert rules' first load during a DB outage",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**9)
    profile = PROFILES[args.profile]
    overrides = {k: v for k, v in (("readings", args.readings), ("devices", args.devices)) if v}
    if overrides:
        profile = replace(profile, **overrides)
    replay = "--probe" if args.probe else f"PROFILE={profile.name}"
    log(f"seed {seed} (replay: make chaos SEED={seed} {replay})")
    started = time.monotonic()
    run_dir = args.runtime_dir / "runs" / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{profile.name}-{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = PrivateStack(args.runtime_dir / "stack", args.stack_ports)
    if args.probe:
        return probe(stack, run_dir, seed, args)
    run = Run(profile, seed, not args.no_crafted, stack, run_dir, random.Random(seed))
    result: dict[str, Any] = {}
    failed = True
    try:
        run.build_workload()
        run.setup()
        result = run.execute()
        invariants: list[Invariant] = result["invariants"]
        failed = not all(i.ok for i in invariants)
        print_table(invariants)
    finally:
        if not args.keep_stack:
            try:
                stack.services("down")
            except Exception as exc:
                log(f"services.sh down failed: {exc}")
        (run_dir / "services.log").write_text("\n".join(stack.log))
        with open(run_dir / "produced.jsonl", "wb") as fh:
            for p in run.planned:
                fh.write(json.dumps(p.record()).encode() + b"\n")
    run.durations["total_s"] = time.monotonic() - started
    summary = {
        "seed": seed,
        "profile": profile.name,
        "crafted": not args.no_crafted,
        "ok": not failed,
        "readings": sum(len(p.readings) for p in run.planned),
        # Genuine duplicates the workload holds (retried uploads, repeated readings).
        "duplicate_readings": sum(len(p.readings) for p in run.planned)
        - len({r for p in run.planned for r in p.readings}),
        # Alerts of the 3-reading trend rule (runs that span batches, kills, restarts).
        "trend_alerts": sum(1 for p in run.planned for a in p.alerts if a[1] == TREND_RULE_INDEX),
        "messages": len(run.planned),
        "durations_s": {k: round(v, 1) for k, v in run.durations.items()},
        "timeline": [asdict(e) for e in run.events],
        "invariants": [i.as_dict() for i in result.get("invariants", [])],
        "dlq": result.get("dlq"),
        "crashes": result.get("crashes"),
        "run_dir": str(run_dir),
    }
    path = args.result or run_dir / "result.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    log(f"result {path}; durations {summary['durations_s']}")
    log(f"{'PASSED' if not failed else 'FAILED'} seed {seed}")
    return 1 if failed else 0


def probe(stack: PrivateStack, run_dir: Path, seed: int, args: argparse.Namespace) -> int:
    """`--probe`: one crafted input per fresh replica; exit 1 if any is mishandled."""
    stack.check_ports_private()
    try:
        stack.services("up")
        database = f"chaos_probe_{uuid.uuid4().hex[:8]}"
        root = create_engine(stack.database_url(""))
        with root.begin() as conn:
            conn.execute(text(f"CREATE DATABASE {database} CHARACTER SET utf8mb4"))
        root.dispose()
        url = stack.database_url(database)
        upgrade_to_head(url)
        engine = create_engine(url, pool_pre_ping=True)  # MariaDB restarts in the probe
        results = run_probe(stack.bootstrap, url, stack.redis_url, engine, run_dir, seed)
        results.append(probe_rules_outage(stack, url, engine, run_dir, seed))
    finally:
        if not args.keep_stack:
            stack.services("down")
    for r in results:
        log(f"{'ok ' if r.ok else 'BAD'} {r.case:<22} key={r.key!r:<14} -> {r.outcome[:150]}")
        if not r.ok:
            log(f"      input: {r.value[:90]}")
    path = args.result or run_dir / "probe.json"
    path.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    bad = sum(not r.ok for r in results)
    log(f"probe: {len(results) - bad}/{len(results)} handled as expected; {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
