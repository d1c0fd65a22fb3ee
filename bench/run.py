"""`make bench`: throughput, CPU per reading, memory and latency of real replicas.

Every scenario runs on a private topic and database of the shared local stack
(tests/integration/stack.py). The load is legacy-shaped watch uploads (bench/workload.py:
no ids, 20% cache flushes of 5 readings) unless said otherwise.

Scenarios:
- drain_1_replica / drain_2_replicas: BENCH_DRAIN_MESSAGES uploads are produced inside one
  Kafka transaction; the replicas start, join and idle (they read committed data only),
  then the commit opens the window and they drain the backlog. readings/s = readings /
  (last row's create_time - commit).
- floor_consume_decode (after drain_1, same topic): a plain confluent-kafka loop that only
  consumes (and, second run, decodes with schemas.decode.decode_message): the cost floor.
- bulk_insert_fresh: the same rows, decoded and bound before the clock, written with the
  consumer's own `MySQLSink.write` (as shipped: LOAD DATA LOCAL INFILE from memory,
  BENCH_BULK_BATCH per transaction) into a freshly migrated database: no Kafka, no Python
  pipeline.
- bulk_insert_duplicates: bulk_insert_fresh with 5% of the readings sent twice (inside a
  batch or across batches): what proving every skipped row a duplicate costs.
- bulk_insert_legacy: the same on an adopted legacy schema (all six legacy indexes).
- latency_5k_1_replica / latency_5k_2_replicas: an open-loop producer paced at
  BENCH_LATENCY_RATE readings/s for BENCH_LATENCY_S; end to end = the row's create_time -
  the moment the upload was produced.
- demo_2k_2_replicas: the `make demo` load (simulator mix, 1% invalid, the demo's alert
  rules) at BENCH_DEMO_RATE messages/s into 2 replicas.
- growth (only when named in BENCH_ONLY: it takes up to hours): bench/growth.py on a
  private MariaDB for each of BENCH_GROWTH_SCHEMAS (shipped, legacy, legacy-tuned) x
  BENCH_GROWTH_DEVICES (20000,200000), BENCH_GROWTH_ROWS rows each (50M), one run at a
  time under nice: rows/s, MariaDB µs/row and buffer-pool reads/row per
  BENCH_GROWTH_CHUNK rows, peak table size; BENCH_GROWTH_MAX_S caps each run (3600).
- gateway_floor / gateway_saturation / gateway_2k / gateway_demo_2k: the ingest gateway
  (bench/bench_gateway.py): its HTTP stack alone, wrk at saturation, 2,000 uploads/s open
  loop, and make demo's simulator through it; CPU per upload of each gateway process.

Measured per scenario: CPU (utime+stime from /proc/<pid>/stat, all threads) of each
replica, of mariadbd (the process on the DB port: shared with whoever else uses it) and
of our own DB sessions' server threads only (/proc/<mariadbd>/task/<tid>, TIDs from
information_schema.PROCESSLIST), of the broker (the java process on the Kafka port) and
of redis-server, each divided by the readings written in the window; peak RSS (VmHWM) of
each replica; p50/p95/p99 latency; load average and machine-wide busy CPU.

Knobs: BENCH_QUICK=1 (everything small, ~3 minutes), BENCH_ONLY=a,b (those scenarios;
the others keep their last results in summary.json), BENCH_DRAIN_MESSAGES,
BENCH_LATENCY_S, BENCH_LATENCY_RATE, BENCH_DEMO_S, BENCH_DEMO_RATE, BENCH_DEVICES,
BENCH_ARRAY_RATIO, BENCH_ARRAY_SIZE, BENCH_BULK_BATCH, BENCH_BULK_THREADS,
BENCH_SAMPLE_S, BENCH_LEGACY_SCHEMA (DDL of a legacy database for bulk_insert_legacy;
default: the ljwx tables of tests/integration/legacy.py),
BENCH_REPLICA_ENV (K=V,... passed to every replica: measure a setting), BENCH_RESULTS
(another results folder, so an experiment does not overwrite the baseline),
BENCH_GW_* (bench_gateway.py). Results: bench/results/<scenario>.json + summary.json.
"""

from __future__ import annotations

import bisect
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def knob(name: str, full: float, quick: float | None = None) -> float:
    if name in os.environ:
        return float(os.environ[name])
    return quick if QUICK and quick is not None else full


if QUICK:  # bench_gateway reads its knobs at import
    os.environ.setdefault("BENCH_GW_SATURATION_S", "5")
    os.environ.setdefault("BENCH_GW_FIXED_S", "5")
    os.environ.setdefault("BENCH_GW_RATE", "2000")

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import bench_gateway  # noqa: E402
from bench.procstat import (  # noqa: E402
    MACHINE,
    Sampler,
    Watched,
    client_ports,
    machine_busy_s,
    memory_mb,
    pid_listening_on,
    thread_cpu_seconds,
)
from bench.report import judge, render  # noqa: E402
from bench.workload import (  # noqa: E402
    Prefill,
    Upload,
    demo_uploads,
    paced,
    watch_uploads,
)
from consumer.tools.replicas import histogram_quantile, total  # noqa: E402
from tests.integration.stack import (  # noqa: E402
    DB_ROOT_URL,
    KAFKA,
    REDIS_URL,
    ConsumerProcess,
    Stack,
    db_url,
    drop_stack,
    make_stack,
    wait_for,
)

RESULTS = Path(os.environ.get("BENCH_RESULTS", ROOT / "bench" / "results"))
DRAIN_MESSAGES = int(knob("BENCH_DRAIN_MESSAGES", 300_000, 30_000))
LATENCY_S = knob("BENCH_LATENCY_S", 60, 10)
LATENCY_RATE = knob("BENCH_LATENCY_RATE", 5000)  # readings/s
DEMO_S = knob("BENCH_DEMO_S", 60, 10)
DEMO_RATE = knob("BENCH_DEMO_RATE", 2000)  # messages/s, as `make demo`
DEVICES = int(knob("BENCH_DEVICES", 2000))
ARRAY_RATIO = knob("BENCH_ARRAY_RATIO", 0.2)
ARRAY_SIZE = int(knob("BENCH_ARRAY_SIZE", 5))
BULK_BATCH = int(knob("BENCH_BULK_BATCH", 1000))
BULK_THREADS = int(knob("BENCH_BULK_THREADS", 1))
SAMPLE_S = knob("BENCH_SAMPLE_S", 0.05)
IDLE_S = knob("BENCH_IDLE_S", 2.0, 1.0)
# BENCH_REPLICA_ENV="BATCH_EAGER=false,KAFKA_CLIENT_QUEUED_MAX_MESSAGES_KBYTES=16384": extra
# settings for every replica, to measure a configuration without editing anything.
REPLICA_ENV = {
    "LOG_LEVEL": "WARNING",
    **dict(
        kv.split("=", 1) for kv in os.environ.get("BENCH_REPLICA_ENV", "").split(",") if "=" in kv
    ),
}
DB_PORT = make_url(DB_ROOT_URL).port or 3306
KAFKA_PORT = int(KAFKA.split(",")[0].rsplit(":", 1)[1])
REDIS_PORT = urlparse(REDIS_URL).port or 6379
SERVICES = {"mariadb": DB_PORT, "broker": KAFKA_PORT, "redis": REDIS_PORT}
Samples = dict[str, list[tuple[dict[str, str], float]]]


# --- measurement -------------------------------------------------------------------------


def find_services() -> dict[str, int | None]:
    """pid of the process listening on each service's port (shared with other users)."""
    return {name: pid_listening_on(port) for name, port in SERVICES.items()}


def own_db_threads(engine: Any, pids: list[int]) -> set[int]:
    """mariadbd thread ids serving the TCP sessions that `pids` have open to the DB port."""
    ports = set().union(*(client_ports(p, DB_PORT) for p in pids)) if pids else set()
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT TID, HOST FROM information_schema.PROCESSLIST WHERE TID IS NOT NULL")
        ).all()
    return {
        int(tid)
        for tid, host in rows
        if host and host.rsplit(":", 1)[-1].isdigit() and int(host.rsplit(":", 1)[-1]) in ports
    }


@dataclass
class Meter:
    """Everything one scenario measures around its window."""

    services: dict[str, int | None]
    replicas: list[ConsumerProcess] = field(default_factory=list)
    sampler: Sampler | None = None
    db_threads_start: dict[int, tuple[str, float]] = field(default_factory=dict)
    replica_threads_start: list[dict[int, tuple[str, float]]] = field(default_factory=list)
    metrics_start: list[Samples] = field(default_factory=list)
    loadavg_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    idle: dict[str, float] = field(default_factory=dict)
    own_tids: set[int] = field(default_factory=set)
    window_start: float = 0.0

    def start_sampling(self, extra: list[Watched] | None = None) -> None:
        watched = [Watched(n, p) for n, p in self.services.items() if p is not None]
        watched += [
            Watched(f"replica{i}", r.proc.pid, memory=True)  # type: ignore[union-attr]
            for i, r in enumerate(self.replicas)
        ]
        watched += extra or []
        watched.append(Watched("machine", MACHINE))
        self.sampler = Sampler(watched, SAMPLE_S).start()

    def measure_idle(self, seconds: float) -> None:
        """CPU rates while our replicas are joined but have nothing to do: the replicas' own
        idle cost (poll loop, monitor, sidecar), and each shared service's baseline (other
        users' load plus our idle replicas), which `close_window` subtracts for `_net`."""
        assert self.sampler is not None
        t0 = self.sampler.mark()
        time.sleep(seconds)
        t1 = self.sampler.mark()
        for name in [*(f"replica{i}" for i in range(len(self.replicas))), *SERVICES]:
            cpu = self.sampler.cpu_between(name, t0, t1) if name in self.sampler.series else None
            if cpu is not None:
                self.idle[name] = round(100 * cpu / (t1 - t0), 2)

    def open_window(self, engine: Any = None, db_pids: list[int] | None = None) -> float:
        """Snapshot what is read per thread, and start the window now.

        `engine`/`db_pids`: clients whose DB sessions are open already (bench/bulk.py);
        sessions are looked up again at the close, for those opened in the window."""
        assert self.sampler is not None
        if self.services.get("mariadb"):
            self.db_threads_start = thread_cpu_seconds(self.services["mariadb"])  # type: ignore[arg-type]
        if engine is not None and db_pids:
            self.own_tids = own_db_threads(engine, db_pids)
        self.replica_threads_start = [thread_cpu_seconds(r.proc.pid) for r in self.replicas]  # type: ignore[union-attr]
        self.metrics_start = [r.samples() for r in self.replicas]
        self.loadavg_start = os.getloadavg()
        self.window_start = self.sampler.mark()
        return self.window_start

    def close_window(
        self, engine: Any, t0: float, t1: float, readings: int, db_pids: list[int] | None = None
    ) -> dict[str, Any]:
        """CPU per reading of everything watched over [t0, t1] (wall clock), memory, load.

        Own DB sessions are measured from open_window to now (their threads do nothing
        else), the rest over exactly [t0, t1].
        """
        assert self.sampler is not None
        self.sampler.mark()
        out: dict[str, Any] = {"window_s": round(t1 - t0, 3), "readings_in_window": readings}
        # Other engineers' tests restart the shared services; a restarted one's CPU is lost.
        restarted = [
            n for n, p in self.services.items() if p is not None and find_services().get(n) != p
        ]
        if restarted:
            out["restarted_during_window"] = restarted

        def per(name: str) -> float | None:
            cpu = self.sampler.cpu_between(name, t0, t1) if self.sampler else None
            return None if cpu is None or not readings else round(cpu * 1e6 / readings, 2)

        replica_us = [per(f"replica{i}") for i in range(len(self.replicas))]
        if self.replicas and all(u is not None for u in replica_us):
            out["consumer_us_per_reading"] = round(sum(u for u in replica_us if u), 2)
            out["consumer_us_per_reading_by_replica_cpu"] = replica_us
            out["consumer_cpu_cores"] = round(
                sum(u for u in replica_us if u) * readings / 1e6 / (t1 - t0), 3
            )
        out["mariadb_us_per_row"] = per("mariadb")
        out["broker_us_per_reading"] = per("broker")
        out["redis_us_per_reading"] = per("redis")
        for name in restarted:
            key = {"mariadb": "mariadb_us_per_row"}.get(name, f"{name}_us_per_reading")
            out[key] = None
        for name, key in (
            ("mariadb", "mariadb_us_per_row"),
            ("broker", "broker_us_per_reading"),
            ("redis", "redis_us_per_reading"),
        ):
            if name in self.idle and out[key] is not None and readings:
                baseline = self.idle[name] / 100 * (t1 - t0) * 1e6 / readings
                out[key + "_net"] = round(out[key] - baseline, 2)
        mariadb = self.services.get("mariadb")
        if mariadb and readings and "mariadb" not in restarted:
            pids = db_pids if db_pids is not None else [r.proc.pid for r in self.replicas]  # type: ignore[union-attr]
            tids = self.own_tids | own_db_threads(engine, pids)
            end = thread_cpu_seconds(mariadb)
            own = sum(
                end[t][1] - self.db_threads_start.get(t, ("", 0.0))[1] for t in tids if t in end
            )
            out["mariadb_own_sessions"] = len(tids)
            out["mariadb_own_sessions_us_per_row"] = round(own * 1e6 / readings, 2)
        if self.replicas:
            out["replicas"] = [self._replica(i, r, readings) for i, r in enumerate(self.replicas)]
            out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in out["replicas"])
        if self.idle:
            out["idle_cpu_percent"] = self.idle
        busy = self.sampler.cpu_between("machine", t0, t1)
        out["machine"] = {
            "cpus": os.cpu_count(),
            "busy_cores": None if busy is None else round(busy / (t1 - t0), 2),
            "loadavg_start": [round(x, 2) for x in self.loadavg_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
        out["loadavg_1m"] = round(max(self.loadavg_start[0], os.getloadavg()[0]), 2)
        return out

    def _replica(self, i: int, r: ConsumerProcess, readings: int) -> dict[str, Any]:
        """One replica: CPU split librdkafka threads / the rest, its own readings, memory."""
        pid = r.proc.pid  # type: ignore[union-attr]
        before, after = self.replica_threads_start[i], thread_cpu_seconds(pid)
        rdk = py = 0.0
        for tid, (name, cpu) in after.items():
            delta = cpu - before.get(tid, (name, 0.0))[1]
            if name.startswith("rdk:"):
                rdk += delta
            else:
                py += delta
        m0, m1 = self.metrics_start[i], r.samples()
        written = total([m1], "health_consumer_records_written_total", sink="mysql") - total(
            [m0], "health_consumer_records_written_total", sink="mysql"
        )
        _, hwm = memory_mb(pid)
        assert self.sampler is not None
        series = self.sampler.series[f"replica{i}"]
        return {
            "pid": pid,
            "records_written": int(written),
            "cpu_s_librdkafka_threads": round(rdk, 3),
            "cpu_s_other_threads": round(py, 3),
            "us_per_own_reading": round((rdk + py) * 1e6 / written, 2) if written else None,
            "peak_rss_mb": round(max(hwm, series.hwm_mb), 1),
            "rss_at_window_start_mb": self._rss_at(series, self.window_start),
            "rss_at_end_mb": round(series.rss_mb[-1], 1) if series.rss_mb else None,
        }

    @staticmethod
    def _rss_at(series: Any, t: float) -> float | None:
        i = bisect.bisect_left(series.times, t)
        return round(series.rss_mb[min(i, len(series.rss_mb) - 1)], 1) if series.rss_mb else None

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()


class CommitProbe:
    """Has the group committed past the last produced message of every partition?
    (Committed offsets move only after the DB commit, so this is "all written".)"""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.consumer = Consumer({"bootstrap.servers": KAFKA, "group.id": stack.group})

    def done(self, last: dict[int, int]) -> bool:
        tps = [TopicPartition(self.stack.topic, p) for p in last]
        committed = self.consumer.committed(tps, timeout=10)
        return all(tp.offset >= last[tp.partition] + 1 for tp in committed)

    def wait(self, last: dict[int, int], timeout: float) -> float:
        wait_for(lambda: self.done(last), timeout, interval=0.1, what="all offsets committed")
        return time.time()

    def close(self) -> None:
        self.consumer.close()


def start_replicas(stack: Stack, n: int, **env: str) -> list[ConsumerProcess]:
    """Launch, wait until each is ready and the group owns every partition between them."""
    procs = [stack.consumer(**REPLICA_ENV, **env).launch() for _ in range(n)]
    for p in procs:
        p.wait_ready(120)

    def settled() -> bool:
        owned = [total([p.samples()], "health_consumer_assigned_partitions") for p in procs]
        return sum(owned) == stack.partitions and all(o > 0 for o in owned)

    wait_for(settled, 120, interval=0.5, what="partitions spread over the replicas")
    return procs


@contextmanager
def metered(stack: Stack, replicas: int) -> Iterator[tuple[Meter, CommitProbe]]:
    """`replicas` started, joined and sampled, the idle rate measured and the window open;
    the sampling and the commit probe stop on the way out, whatever happened."""
    meter = Meter(find_services(), start_replicas(stack, replicas))
    probe = CommitProbe(stack)
    try:
        meter.start_sampling()
        meter.measure_idle(IDLE_S)
        meter.open_window()
        yield meter, probe
    finally:
        probe.close()
        meter.stop()


def stop_replicas(procs: list[ConsumerProcess]) -> list[int | None]:
    return [p.stop() for p in procs]


def row_times(stack: Stack) -> tuple[int, float, float]:
    n, first, last = stack.rows(
        "SELECT COUNT(*), UNIX_TIMESTAMP(MIN(create_time)), UNIX_TIMESTAMP(MAX(create_time)) "
        "FROM t_user_health_data"
    )[0]
    return int(n), float(first), float(last)


def consumer_stats(procs: list[ConsumerProcess]) -> dict[str, Any]:
    samples = [p.samples() for p in procs]
    own_p95 = histogram_quantile(samples, "health_consumer_end_to_end_latency_seconds", 0.95)
    return {
        "duplicates": int(total(samples, "health_consumer_records_duplicate_total")),
        "dead_letters": int(total(samples, "health_consumer_dead_letters_total")),
        "p95_batch_size": histogram_quantile(samples, "health_consumer_batch_size_records", 0.95),
        "consumer_histogram_p95_ms": None if own_p95 is None else round(own_p95 * 1000, 1),
    }


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


def workload_info() -> dict[str, Any]:
    return {
        "replica_env": {k: v for k, v in REPLICA_ENV.items() if k != "LOG_LEVEL"},
        "shape": 'legacy watch uploads {"data": [...]}, no ids',
        "devices": DEVICES,
        "array_ratio": ARRAY_RATIO,
        "array_size": ARRAY_SIZE,
    }


def uploads(messages: int, seed: int) -> Iterator[Upload]:
    return watch_uploads(
        messages, seed=seed, devices=DEVICES, array_ratio=ARRAY_RATIO, array_size=ARRAY_SIZE
    )


@contextmanager
def private_stack() -> Iterator[Stack]:
    stack = make_stack()
    try:
        yield stack
    finally:
        drop_stack(stack)


# --- scenarios ---------------------------------------------------------------------------


def drain(
    replicas: int, seed: int, then: Callable[[Stack, Prefill, Meter], Any] | None = None
) -> dict[str, Any]:
    with private_stack() as stack:
        t = time.monotonic()
        fill = Prefill(KAFKA, stack.topic)
        fill.produce(uploads(DRAIN_MESSAGES, seed))
        print(
            f"  prefilled {fill.messages} messages / {fill.readings} readings in "
            f"{time.monotonic() - t:.1f}s (one open transaction)",
            flush=True,
        )
        with metered(stack, replicas) as (meter, probe):
            t0 = fill.commit()
            t_done = probe.wait(fill.offsets.last, 1800)
            rows, first, last = row_times(stack)
            t1 = min(t_done, last + 0.05)  # the last INSERT started at `last`; then commit
            result: dict[str, Any] = {
                "replicas": replicas,
                "messages": fill.messages,
                "readings": fill.readings,
                "rows": rows,
                "readings_per_s": round(rows / (last - t0), 1),
                "readings_per_s_db_span": round(rows / (last - first), 1),
                "drain_seconds": round(last - t0, 3),
                "p50_ms": None,
                "p95_ms": None,
                "p99_ms": None,
                "latency_note": "pre-filled backlog: latency would be queueing time",
                "workload": workload_info(),
                **meter.close_window(stack.engine, t0, t1, rows),
                **consumer_stats(meter.replicas),
            }
            stop_replicas(meter.replicas)
            if then is not None:
                then(stack, fill, meter)
        return result


def floor(stack: Stack, fill: Prefill, meter: Meter) -> dict[str, Any]:
    """consume-only and consume+decode loops over the drained topic (broker CPU too)."""
    runs: dict[str, dict[str, Any]] = {}
    for mode in ("consume_only", "consume_decode"):
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "floor.py"),
            "--topic",
            stack.topic,
            "--messages",
            str(fill.messages),
        ] + (["--no-decode"] if mode == "consume_only" else [])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"floor {mode} failed: {done.stdout}{done.stderr}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        t0, t1 = r["window"]
        assert meter.sampler is not None
        meter.sampler.mark()
        broker = meter.sampler.cpu_between("broker", t0, t1)
        n = fill.readings
        runs[mode] = {
            **r,
            "readings_per_s": round(n / r["seconds"], 1),
            "consumer_us_per_reading": round(r["cpu_seconds"] * 1e6 / n, 2),
            "broker_us_per_reading": None if broker is None else round(broker * 1e6 / n, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
    decode = runs["consume_decode"]
    if decode["readings"] != fill.readings:
        raise RuntimeError(f"floor decoded {decode['readings']} readings of {fill.readings}")
    return {
        "readings": fill.readings,
        "messages": fill.messages,
        "readings_per_s": decode["readings_per_s"],
        "consumer_us_per_reading": decode["consumer_us_per_reading"],
        "consume_only_us_per_reading": runs["consume_only"]["consumer_us_per_reading"],
        "decode_us_per_reading": round(
            decode["consumer_us_per_reading"] - runs["consume_only"]["consumer_us_per_reading"], 2
        ),
        "broker_us_per_reading": decode["broker_us_per_reading"],
        "loadavg_1m": decode["loadavg_1m"],
        "runs": runs,
        "workload": workload_info(),
    }


def bulk_insert(
    database_url: str, seed: int, messages: int, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """bench/bulk.py against `database_url`; mariadbd CPU around exactly its inserts."""
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "bulk.py"),
        "--database-url",
        database_url,
        "--messages",
        str(messages),
        "--seed",
        str(seed),
        "--devices",
        str(DEVICES),
        "--array-ratio",
        str(ARRAY_RATIO),
        "--array-size",
        str(ARRAY_SIZE),
        "--batch",
        str(BULK_BATCH),
        "--threads",
        str(BULK_THREADS),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdin is not None and proc.stdout is not None
    meter = Meter(find_services())
    engine = create_engine(DB_ROOT_URL)
    try:
        ready = proc.stdout.readline()
        if not ready.startswith("READY"):
            raise RuntimeError(f"bulk.py did not start: {ready!r}")
        meter.start_sampling([Watched("client", proc.pid)])
        meter.open_window(engine, [proc.pid])
        proc.stdin.write("GO\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if proc.wait(60) != 0 or not line:
            raise RuntimeError("bulk.py failed")
        r = json.loads(line)
        t0, t1 = r["window"]
        m = meter.close_window(engine, t0, t1, r["rows"], db_pids=[proc.pid])
    finally:
        if proc.poll() is None:
            proc.kill()
        meter.stop()
        engine.dispose()
    return {
        **{k: v for k, v in r.items() if k != "window"},
        "readings_per_s": round(r["rows"] / r["seconds"], 1),
        "rows_per_s": round(r["rows"] / r["seconds"], 1),
        "client_us_per_row": round(r["cpu_seconds"] * 1e6 / r["rows"], 2),
        **{k: v for k, v in m.items() if k not in ("consumer_us_per_reading",)},
        "workload": workload_info(),
    }


def bulk_fresh(seed: int) -> dict[str, Any]:
    with private_stack() as stack:
        return {
            "schema": "fresh (alembic head)",
            **bulk_insert(stack.database_url, seed, DRAIN_MESSAGES),
        }


def bulk_duplicates(seed: int) -> dict[str, Any]:
    """bulk_insert_fresh with 5% of the readings sent twice (retries, replays): what proving
    every skipped row a duplicate costs (issue 16)."""
    with private_stack() as stack:
        return {
            "schema": "fresh (alembic head)",
            **bulk_insert(stack.database_url, seed, DRAIN_MESSAGES, ("--duplicate-ratio", "0.05")),
        }


def legacy_migrate() -> Callable[[str], Any] | str:
    """`consumer.db.migrate.migrate` when this branch can adopt a legacy database, else why
    not (the adoption work lands on another branch; this scenario waits for it)."""
    try:
        importlib.import_module("consumer.db.adopt")
    except ImportError:
        return "legacy adoption (consumer.db.adopt) is not on this branch yet"
    migrate = getattr(importlib.import_module("consumer.db.migrate"), "migrate", None)
    if migrate is None:
        return "consumer.db.migrate has no migrate() that adopts a legacy database"
    ddl = os.environ.get("BENCH_LEGACY_SCHEMA")
    if ddl and not Path(ddl).is_file():
        return f"BENCH_LEGACY_SCHEMA={ddl} is not a file"
    return migrate  # type: ignore[no-any-return]


def legacy_statements() -> list[str]:
    """The legacy DDL: BENCH_LEGACY_SCHEMA's file, else the ljwx tables the drop-in tests
    build (docs/legacy-compatibility.md: all six legacy indexes on the health table)."""
    ddl = os.environ.get("BENCH_LEGACY_SCHEMA")
    if ddl:
        return [s for s in Path(ddl).read_text().split(";") if s.strip()]
    legacy = importlib.import_module("tests.integration.legacy")
    return [ddl.replace("{methods}", legacy.PRODUCTION_METHODS) for ddl in legacy.LEGACY_DDL]


def bulk_legacy(seed: int) -> dict[str, Any]:
    migrate = legacy_migrate()
    if isinstance(migrate, str):
        return {"skipped": migrate}
    name = f"hs_bench_legacy_{uuid.uuid4().hex[:10]}"
    root = create_engine(DB_ROOT_URL)
    try:
        with root.begin() as conn:
            conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
        engine = create_engine(db_url(name))
        with engine.begin() as conn:
            for statement in legacy_statements():
                conn.exec_driver_sql(statement)
        engine.dispose()
        migrate(db_url(name))
        return {"schema": "adopted legacy", **bulk_insert(db_url(name), seed, DRAIN_MESSAGES)}
    finally:
        with root.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        root.dispose()


def steady(
    replicas: int,
    load: list[Upload],
    rate: float,
    per_upload: Callable[[Upload], int],
    seconds: float,
    setup_sql: str | None = None,
) -> dict[str, Any]:
    """An open-loop producer at `rate` for `seconds` into `replicas` replicas: latency."""
    with private_stack() as stack:
        if setup_sql:
            with stack.engine.begin() as conn:
                conn.exec_driver_sql(setup_sql)
        with metered(stack, replicas) as (meter, probe):
            sent, t0, t1, offsets = paced(KAFKA, stack.topic, load, rate, per_upload, seconds)
            probe.wait(offsets.last, 300)
            rows = stack.rows(
                "SELECT device_sn, DATE_FORMAT(timestamp, '%Y-%m-%d %H:%i:%s'), "
                "UNIX_TIMESTAMP(create_time) FROM t_user_health_data"
            )
            sent_at = {k: sent[i] for i, u in enumerate(load[: len(sent)]) for k in u.readings}
            lat = sorted(
                float(ct) - sent_at[(sn, ts)] for sn, ts, ct in rows if (sn, ts) in sent_at
            )
            in_window = sum(1 for _, _, ct in rows if t0 <= float(ct) <= t1)
            expected = sum(len(u.readings) for u in load[: len(sent)])
            result: dict[str, Any] = {
                "replicas": replicas,
                "target_rate": rate,
                "rate_unit": "readings/s" if per_upload is _readings else "messages/s",
                "achieved_messages_per_s": round(len(sent) / (t1 - t0), 1),
                "readings_per_s": round(expected / (t1 - t0), 1),
                "seconds": round(t1 - t0, 2),
                "messages": len(sent),
                "readings": expected,
                "rows": len(rows),
                "latency_rows": len(lat),
                "p50_ms": pct(lat, 0.50),
                "p95_ms": pct(lat, 0.95),
                "p99_ms": pct(lat, 0.99),
                "max_ms": pct(lat, 1.0),
                **meter.close_window(stack.engine, t0, t1, in_window),
                **consumer_stats(meter.replicas),
            }
            stop_replicas(meter.replicas)
        return result


def _readings(u: Upload) -> int:
    return max(1, len(u.readings))


def _message(_u: Upload) -> int:
    return 1


def latency(replicas: int, seed: int) -> dict[str, Any]:
    n = int(LATENCY_RATE * LATENCY_S / (1 + ARRAY_RATIO * (ARRAY_SIZE - 1)) * 1.1) + 100
    load = list(uploads(n, seed))
    return {
        **steady(replicas, load, LATENCY_RATE, _readings, LATENCY_S),
        "workload": workload_info(),
    }


def demo(seed: int) -> dict[str, Any]:
    # The alert rules `make demo` creates (scripts/ is not a package).
    rules: str = importlib.import_module("scripts.demo").DEMO_RULES

    load = list(demo_uploads(int(DEMO_RATE * DEMO_S * 1.05) + 100, seed=seed))
    result = steady(2, load, DEMO_RATE, _message, DEMO_S, setup_sql=rules)
    result["workload"] = {
        "replica_env": {k: v for k, v in REPLICA_ENV.items() if k != "LOG_LEVEL"},
        "shape": "consumer.tools.simulate mix as make demo (500 devices, "
        "1% invalid, demo alert rules)",
    }
    return result


def growth() -> dict[str, Any]:
    """bench/growth.py for every schema x device count, one at a time (issue 20)."""
    rows = int(knob("BENCH_GROWTH_ROWS", 50_000_000, 2_000_000))
    chunk = int(knob("BENCH_GROWTH_CHUNK", 1_000_000, 250_000))
    # A collapsed schema writes ~5k rows/s: 50M would take 3 hours; an hour tells enough
    # (the "rows reached" target then reads missed).
    max_s = os.environ.get("BENCH_GROWTH_MAX_S", "3600")
    schemas = os.environ.get("BENCH_GROWTH_SCHEMAS", "shipped,legacy,legacy-tuned").split(",")
    devices = [int(d) for d in os.environ.get("BENCH_GROWTH_DEVICES", "20000,200000").split(",")]
    out: dict[str, Any] = {"target_rows": rows, "runs": {}}
    for schema in schemas:
        for n in devices:
            name = f"{schema}_{n // 1000}k"
            path = RESULTS / f"growth_{name}.json"
            cmd = ["nice", "-n", "10", sys.executable, str(ROOT / "bench" / "growth.py")]
            cmd += ["--schema", schema, "--devices", str(n), "--rows", str(rows)]
            cmd += ["--chunk", str(chunk), "--out", str(path)]
            cmd += ["--max-seconds", max_s] if max_s else []
            print(f"  growth {name}: {' '.join(cmd[3:])}", flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
            run = json.loads(path.read_text())
            out["runs"][name] = {k: v for k, v in run.items() if k != "create_table"}
            out[f"{name}_min_rows_per_s"] = run["min_chunk_rows_per_s"]
            out[f"{name}_reached_rows"] = run["rows"]
            out[f"{name}_peak_table_gb"] = run["peak_table_gb"]
            for c in run["chunks"]:
                print(
                    f"    {c['rows_in_table']:>11,} rows: {c['rows_per_s']:>9,.0f} rows/s "
                    f"{c['mariadb_us_per_row']:>6} µs/row {c['bp_reads_per_row']:>6} reads/row "
                    f"{c['table_gb']} GB",
                    flush=True,
                )
    return out


def gateway(run: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    def wrapped() -> dict[str, Any]:
        load0 = os.getloadavg()
        busy0 = machine_busy_s()
        started = time.monotonic()
        result = run()
        # What else ran: the machine's busy cores over the scenario (2 = both saturated).
        result["machine_busy_cores"] = round(
            (machine_busy_s() - busy0) / (time.monotonic() - started), 2
        )
        for process, us in result.get("gateway_us_per_process", {}).items():
            print(f"  gateway CPU {process}: {us} µs/upload", flush=True)
        result["loadavg_1m"] = round(max(load0[0], os.getloadavg()[0]), 2)
        result["machine"] = {
            "cpus": os.cpu_count(),
            "loadavg_start": load0,
            "loadavg_end": os.getloadavg(),
        }
        return result

    return wrapped


# --- main --------------------------------------------------------------------------------


def report_only() -> int:
    """`bench/run.py --report`: summary.json and the tables again, from the per-scenario
    files in BENCH_RESULTS (after an interrupted run, or runs of single scenarios)."""
    summary: dict[str, Any] = {}
    for name in SCENARIO_ORDER:
        path = RESULTS / f"{name}.json"
        if path.exists():
            data = json.loads(path.read_text())
            summary[name] = {k: data.get(k) for k in SUMMARY_KEYS if k in data}
            summary[name].update(
                targets=data.get("targets", []), quick=data.get("quick"), at=data.get("at")
            )
    write_summary(RESULTS / "summary.json", summary, time.monotonic())
    print(render(summary))
    return 0


def main() -> int:
    if "--report" in sys.argv[1:]:
        return report_only()
    RESULTS.mkdir(parents=True, exist_ok=True)
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    results: dict[str, dict[str, Any]] = {}
    recorded: set[str] = set()

    def drain_1() -> dict[str, Any]:
        def then(stack: Stack, fill: Prefill, meter: Meter) -> None:
            if not only or "floor_consume_decode" in only:
                print("bench floor_consume_decode ...", flush=True)
                results["floor_consume_decode"] = floor(stack, fill, meter)

        return drain(1, seed=11, then=then)

    scenarios: dict[str, Callable[[], dict[str, Any]]] = {
        "drain_1_replica": drain_1,
        "drain_2_replicas": lambda: drain(2, seed=11),
        "bulk_insert_fresh": lambda: bulk_fresh(seed=11),
        "bulk_insert_duplicates": lambda: bulk_duplicates(seed=11),
        "bulk_insert_legacy": lambda: bulk_legacy(seed=11),
        "latency_5k_1_replica": lambda: latency(1, seed=13),
        "latency_5k_2_replicas": lambda: latency(2, seed=13),
        "demo_2k_2_replicas": lambda: demo(seed=17),
        "gateway_floor": gateway(bench_gateway.floor),
        "gateway_saturation": gateway(bench_gateway.saturation),
        "gateway_2k": gateway(bench_gateway.fixed_rate),
        "gateway_demo_2k": gateway(bench_gateway.demo),
        "growth": growth,
    }
    opt_in = {"growth"}  # hours long: runs only when BENCH_ONLY names it
    if only and "floor_consume_decode" in only and "drain_1_replica" not in only:
        only.add("drain_1_replica")  # the floor reads the topic drain_1 filled
    summary_path = RESULTS / "summary.json"
    # BENCH_ONLY runs update their scenarios and keep the others' last results.
    old = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary: dict[str, Any] = old.get("scenarios", {}) if isinstance(old, dict) else {}
    started = time.monotonic()
    for name, run in scenarios.items():
        if (only and name not in only) or (name in opt_in and name not in only):
            continue
        print(f"bench {name} ...", flush=True)
        try:
            results[name] = run()
        except Exception as exc:  # one broken scenario must not lose the others' results
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        for done in [d for d in results if d not in recorded]:  # the floor comes with drain_1
            record(done, results[done], summary)
            recorded.add(done)
            print(render({done: summary[done]}), flush=True)
        write_summary(summary_path, summary, started)
    meta = write_summary(summary_path, summary, started)
    print()
    print(render(summary))
    print(f"\nresults: {RESULTS}/<scenario>.json, summary.json ({meta['seconds']} s)")
    return 0


def write_summary(path: Path, summary: dict[str, Any], started: float) -> dict[str, Any]:
    meta = {
        "command": " ".join(f"{k}={v}" for k, v in os.environ.items() if k.startswith("BENCH_"))
        + " make bench",
        "quick": QUICK,
        "seconds": round(time.monotonic() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "services": {n: {"port": SERVICES[n], "pid": p} for n, p in find_services().items()},
    }
    path.write_text(json.dumps({"meta": meta, "scenarios": summary}, indent=2) + "\n")
    return meta


SCENARIO_ORDER = (
    "drain_1_replica",
    "floor_consume_decode",
    "drain_2_replicas",
    "bulk_insert_fresh",
    "bulk_insert_duplicates",
    "bulk_insert_legacy",
    "latency_5k_1_replica",
    "latency_5k_2_replicas",
    "demo_2k_2_replicas",
    "gateway_floor",
    "gateway_saturation",
    "gateway_2k",
    "gateway_demo_2k",
    "growth",
)
SUMMARY_KEYS = (
    "readings_per_s",
    "consumer_us_per_reading",
    "mariadb_us_per_row",
    "mariadb_own_sessions_us_per_row",
    "broker_us_per_reading",
    "redis_us_per_reading",
    "peak_rss_mb",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "loadavg_1m",
    "uploads_per_s",
    "gateway_us_per_upload",
    "gateway_us_per_process",
    "errors",
    "missing_in_db",
    "achieved_rate",
    "skipped",
    "shipped_200k_min_rows_per_s",
    "shipped_200k_reached_rows",
    "legacy-tuned_200k_min_rows_per_s",
    "legacy-tuned_200k_reached_rows",
)


def record(name: str, result: dict[str, Any], summary: dict[str, Any]) -> None:
    targets = judge(name, result)
    full = {
        "scenario": name,
        "quick": QUICK,
        **result,
        "targets": targets,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(full, indent=2) + "\n")
    summary[name] = {k: result.get(k) for k in SUMMARY_KEYS if k in result}
    summary[name]["targets"] = targets
    summary[name]["quick"] = QUICK


if __name__ == "__main__":
    sys.exit(main())
