"""Insert cost of the health table's indexes: which dashboard indexes a fresh schema can afford.

Bulk-inserts ROWS readings in batches of BATCH with exactly the statement the sink sends
(`HEALTH_SQL_HEAD + render_health_values(...) + HEALTH_SQL_TAIL`, one transaction per
batch, through the sink's own engine) into the migrated fresh schema, once per index set:
- unique_only: the primary key and the unique key (device_sn, timestamp) only;
- one set per candidate dashboard index on its own, to see what each one costs;
- chosen: the secondary indexes consumer/db/tables.py declares (what `migrate` creates);
- legacy_all: the unique key plus every secondary index of the legacy KEY list (what an
  adopted legacy database carries).

Reported per set: rows/s (wall time of the inserts; SQL is rendered before the clock
starts), MariaDB CPU µs per row (utime+stime of the mariadbd process serving port 3306,
from /proc/<pid>/stat, before/after) and the CPU of our own connection's server thread
(/proc/<pid>/task/<tid>/stat; less noisy on a shared server, since other clients' queries
land in other threads). Each set runs REPEAT times in rotation; the median is reported
and the minimum too (on a shared machine the least disturbed run is the closest to the
true cost). Results: bench/results/bench_db.json.

    .venv/bin/python bench/bench_db.py [--rows 200000] [--batch 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pymysql
from sqlalchemy import Engine, create_engine, exc, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consumer.db.migrate import upgrade_to_head  # noqa: E402
from consumer.db.tables import health_data  # noqa: E402
from consumer.sinks.mysql import (  # noqa: E402
    HEALTH_SQL_HEAD,
    HEALTH_SQL_TAIL,
    execute_literal,
    make_engine,
)
from consumer.sinks.mysql_rows import render_health_values  # noqa: E402
from schemas.record import HealthRecord  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ROOT_URL = os.environ.get("DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306/health")
PORT = 3306
TABLE = "t_user_health_data"
CLOCK_TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")

# The secondary indexes of the legacy KEY list (tables.md), by name.
LEGACY_INDEXES: dict[str, tuple[str, ...]] = {
    "idx_timestamp": ("timestamp",),
    "idx_device_sn": ("device_sn",),
    "idx_health_customer_device_time": ("customer_id", "device_sn", "timestamp"),
    "idx_health_customer_user_time": ("customer_id", "user_id", "timestamp"),
    "idx_health_customer_status": ("customer_id", "is_deleted"),
    "idx_health_cover_basic": (
        "customer_id",
        "user_id",
        "timestamp",
        "heart_rate",
        "pressure_high",
        "pressure_low",
        "blood_oxygen",
    ),
}
CHOSEN: dict[str, tuple[str, ...]] = {
    str(ix.name): tuple(c.name for c in ix.columns) for ix in health_data.indexes
}
CANDIDATES: dict[str, tuple[str, ...]] = {
    **CHOSEN,
    "idx_health_customer_device_time": LEGACY_INDEXES["idx_health_customer_device_time"],
    "idx_health_cover_basic": LEGACY_INDEXES["idx_health_cover_basic"],
}


def index_sets() -> dict[str, dict[str, tuple[str, ...]]]:
    sets: dict[str, dict[str, tuple[str, ...]]] = {"unique_only": {}}
    sets.update({f"+{name}": {name: cols} for name, cols in CANDIDATES.items()})
    sets["chosen"] = dict(CHOSEN)
    sets["legacy_all"] = dict(LEGACY_INDEXES)
    return sets


def make_records(rows: int, devices: int) -> list[HealthRecord]:
    """One reading per device per minute, devices interleaved as in a partition's batch;
    20 customers, one user per device, vitals and GPS like the simulator's."""
    base = dt.datetime(2025, 6, 1)
    out = []
    for n in range(rows):
        device, minute = n % devices, n // devices
        out.append(
            HealthRecord(
                device_sn=f"CRFTQ2340{device:07d}",
                timestamp=base + dt.timedelta(minutes=minute),
                customer_id=1000 + device % 20,
                org_id=2000 + device % 200,
                user_id=100_000 + device,
                heart_rate=60 + n % 50,
                blood_oxygen=94 + n % 6,
                temperature=Decimal("36.5") + Decimal(n % 9) / 10,
                pressure_high=110 + n % 20,
                pressure_low=70 + n % 15,
                stress=n % 100,
                step=n % 20_000,
                distance=Decimal(n % 14_000) / 10,
                calorie=Decimal(n % 800) / 10,
                latitude=Decimal("22.543096"),
                longitude=Decimal("114.057865"),
                altitude=Decimal("12.0"),
                upload_method=("wifi", "4g", "bluetooth", None)[n % 4],
            )
        )
    return out


def mariadb_pid(port: int = PORT) -> int:
    """The pid of the process listening on 127.0.0.1:<port> (several mariadbd may run)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid_dir.name)
        except OSError:
            continue
    raise SystemExit(f"no process listens on port {port}: is MariaDB running?")


def cpu_us(stat_path: str) -> float:
    """utime + stime of a process or thread, in µs."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_US


def reset_table(root: Engine, indexes: dict[str, tuple[str, ...]]) -> None:
    """Empty the table and give it exactly the unique key plus `indexes`."""
    with root.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE TABLE {TABLE}")
        existing = {
            r[0]
            for r in conn.exec_driver_sql(
                f"SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS "
                f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{TABLE}' "
                "AND NON_UNIQUE = 1"
            )
        }
        clauses = [f"DROP INDEX `{name}`" for name in sorted(existing)]
        clauses += [
            f"ADD INDEX `{name}` ({', '.join(f'`{c}`' for c in cols)})"
            for name, cols in indexes.items()
        ]
        if clauses:
            conn.exec_driver_sql(f"ALTER TABLE {TABLE} {', '.join(clauses)}")


def run_once(engine: Engine, pid: int, statements: list[str], rows: int) -> dict[str, float]:
    with engine.connect() as conn:
        tid = conn.exec_driver_sql(
            "SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"
        ).scalar()
        conn.commit()
        thread_stat = f"/proc/{pid}/task/{tid}/stat"
        process0, thread0 = cpu_us(f"/proc/{pid}/stat"), cpu_us(thread_stat)
        started = time.perf_counter()
        inserted = 0
        for sql in statements:
            inserted += execute_literal(conn, sql)
            conn.commit()
        wall = time.perf_counter() - started
        process1, thread1 = cpu_us(f"/proc/{pid}/stat"), cpu_us(thread_stat)
    assert inserted == rows, f"inserted {inserted} of {rows}"
    return {
        "rows_per_s": rows / wall,
        "process_us_per_row": (process1 - process0) / rows,
        "thread_us_per_row": (thread1 - thread0) / rows,
    }


def measure(
    engine: Engine,
    root: Engine,
    indexes: dict[str, tuple[str, ...]],
    statements: list[str],
    rows: int,
    attempts: int = 3,
) -> dict[str, float]:
    """One run; the shared server restarts now and then (other engineers' outage tests),
    so a run that loses its connection waits for the server and starts over."""
    for attempt in range(1, attempts + 1):
        try:
            reset_table(root, indexes)
            return run_once(engine, mariadb_pid(), statements, rows)
        except (exc.OperationalError, pymysql.err.OperationalError) as err:
            if attempt == attempts:
                raise
            print(f"  lost the server ({err}); waiting and running again", flush=True)
            wait_for_server(root)
    raise AssertionError("unreachable")


def wait_for_server(root: Engine, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with root.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return
        except exc.OperationalError:
            time.sleep(2)
    raise SystemExit("MariaDB did not come back")


def summarize(runs: list[dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": [{k: round(v, 2) for k, v in r.items()} for r in runs]}
    for key in ("rows_per_s", "process_us_per_row", "thread_us_per_row"):
        values = [r[key] for r in runs]
        out[key] = round(statistics.median(values), 2)
        best = max(values) if key == "rows_per_s" else min(values)
        out[f"best_{key}"] = round(best, 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated set names")
    args = parser.parse_args()

    sets = index_sets()
    if args.only:
        sets = {k: v for k, v in sets.items() if k in args.only.split(",")}
    records = make_records(args.rows, args.devices)
    statements = [
        HEALTH_SQL_HEAD + render_health_values(records[i : i + args.batch]) + HEALTH_SQL_TAIL
        for i in range(0, len(records), args.batch)
    ]
    pid = mariadb_pid()
    database = f"hs_bench_{uuid.uuid4().hex[:10]}"
    server = create_engine(ROOT_URL)
    with server.begin() as conn:
        conn.execute(text(f"CREATE DATABASE {database} CHARACTER SET utf8mb4"))
    url = ROOT_URL.rsplit("/", 1)[0] + "/" + database
    results: dict[str, list[dict[str, float]]] = {name: [] for name in sets}
    try:
        upgrade_to_head(url)
        root = create_engine(url, pool_pre_ping=True)
        engine = make_engine(url, pool_size=1)
        for round_no in range(args.repeat):
            # Rotate the order, so drift in the machine's load does not favour one set.
            names = list(sets)
            names = names[round_no % len(names) :] + names[: round_no % len(names)]
            for name in names:
                result = measure(engine, root, sets[name], statements, args.rows)
                results[name].append(result)
                print(
                    f"round {round_no + 1} {name:36s} {result['rows_per_s']:9.0f} rows/s "
                    f"{result['process_us_per_row']:6.2f} µs/row (process) "
                    f"{result['thread_us_per_row']:6.2f} µs/row (thread)",
                    flush=True,
                )
        engine.dispose()
        root.dispose()
    finally:
        wait_for_server(server)
        with server.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {database}"))
        server.dispose()

    report = {
        "rows": args.rows,
        "batch": args.batch,
        "devices": args.devices,
        "repeat": args.repeat,
        "mariadb_pid": pid,
        "load_average_at_end": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sets": {
            name: {"indexes": {k: list(v) for k, v in sets[name].items()}, **summarize(runs)}
            for name, runs in results.items()
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_db.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n| index set | rows/s | MariaDB µs/row (process) | µs/row (our thread) |")
    print("|---|---:|---:|---:|")
    for name, s in report["sets"].items():
        print(
            f"| {name} | {s['rows_per_s']:.0f} (best {s['best_rows_per_s']:.0f}) "
            f"| {s['process_us_per_row']:.1f} (best {s['best_process_us_per_row']:.1f}) "
            f"| {s['thread_us_per_row']:.1f} (best {s['best_thread_us_per_row']:.1f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
