"""Growth: the write rate as t_user_health_data grows to tens of millions of rows (issue 20).

Every other benchmark writes into small tables; a deployment of 200k watches writes 12M
rows an hour. This one writes `--rows` readings through the consumer's own
`MySQLSink.write` (LOAD DATA path, `--threads` writers, `--batch` records per
transaction), one reading per device per minute with the devices interleaved in a fixed
random order (as Kafka partitions batch them), and reports per chunk of `--chunk` rows:
rows/s, MariaDB CPU µs/row (the whole mariadbd: the server is private), InnoDB
buffer-pool reads per row (the `Innodb_buffer_pool_reads` delta: pages read from disk)
and the size of the table's files (data + indexes).

The server is a PRIVATE MariaDB (scripts/services.sh on its own port and runtime folder,
so the same settings as the shared one, 1 GB buffer pool included): a 50M-row run fills
~15 GB and would starve everyone else's tests on the shared server. It is stopped and its
datadir removed at the end unless --keep-server.

Records are realistic for the indexes: 10 customers, one user per device (so
`(customer_id, user_id, timestamp)` is per device, as in production), 16-character SNs.

Schemas (--schema):
- shipped: a fresh database migrated to --revision (default: head);
- legacy: the ljwx tables of tests/integration/legacy.py (its six secondary indexes),
  adopted by `consumer.db.migrate.migrate`;
- legacy-tuned: legacy, then `consumer.db.tune` replaces its collapse-prone indexes.
--sql runs extra statements after that (experiments: other keys, partitions, engines);
--global sets server variables (SET GLOBAL) before the run.

Prints one JSON line per chunk while it runs, and writes the whole run (command, settings,
chunks, peak size) to --out.

    nice -n 10 .venv/bin/python bench/growth.py --devices 200000 --rows 10000000 \
        --schema shipped --out bench/results/growth_shipped_200k.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alembic import command  # noqa: E402
from sqlalchemy import Engine, create_engine, text  # noqa: E402

from bench.procstat import cpu_seconds, pid_listening_on  # noqa: E402
from consumer.db import partitions  # noqa: E402
from consumer.db.migrate import alembic_config, migrate  # noqa: E402
from consumer.sinks.mysql import MySQLSink, make_engine  # noqa: E402
from consumer.tools.retention import retention  # noqa: E402
from schemas.record import HealthRecord  # noqa: E402

START = dt.datetime(2025, 6, 1, 0, 0, 0)
CUSTOMERS = 10
DATABASE = "growth"


@contextmanager
def private_server(runtime: Path, port: int, keep: bool, extra: list[str]) -> Iterator[str]:
    """scripts/services.sh's MariaDB on `port` with its datadir under `runtime`."""
    env = {
        **os.environ,
        "HEALTHSTREAM_RUNTIME_DIR": str(runtime),
        "HEALTHSTREAM_MARIADB_PORT": str(port),
        "HEALTHSTREAM_MARIADB_EXTRA_ARGS": " ".join(extra),
    }
    services = str(ROOT / "scripts" / "services.sh")
    subprocess.run([services, "up", "mariadb"], env=env, check=True, capture_output=True)
    try:
        yield f"mysql+pymysql://root@127.0.0.1:{port}"
    finally:
        if not keep:
            subprocess.run([services, "down", "mariadb"], env=env, check=False)
            shutil.rmtree(runtime, ignore_errors=True)


def legacy_statements() -> list[str]:
    legacy = importlib.import_module("tests.integration.legacy")
    return [ddl.replace("{methods}", legacy.PRODUCTION_METHODS) for ddl in legacy.LEGACY_DDL]


def build_schema(server: str, schema: str, revision: str, sql: list[str]) -> str:
    url = f"{server}/{DATABASE}"
    root = create_engine(f"{server}/mysql")
    with root.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        conn.execute(text(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4"))
    root.dispose()
    if schema == "shipped":
        command.upgrade(alembic_config(url), revision)
    else:
        engine = create_engine(url)
        with engine.begin() as conn:
            for statement in legacy_statements():
                conn.exec_driver_sql(statement)
        engine.dispose()
        migrate(url)
        if schema == "legacy-tuned":
            tune = importlib.import_module("consumer.db.tune")
            tune.tune_indexes(url, dry_run=False)
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in sql:
            conn.exec_driver_sql(statement)
    engine.dispose()
    return url


def partition_minutes(devices: int, pool_bytes: int = 2**30) -> int:
    """docs/capacity.md's rule: the current partition's two device-leading indexes (~100 B
    per reading) in at most 30% of the pool; a divisor of 60, at most an hour."""
    fit = 0.3 * pool_bytes / (devices * 100)
    return max((m for m in (5, 10, 15, 20, 30, 60) if m <= fit), default=5)


def add_partitions(url: str, args: argparse.Namespace) -> str | None:
    """Partitions over the run's readings, as the retention command keeps them ahead."""
    if args.partition_minutes is None:
        args.partition_minutes = partition_minutes(args.devices)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            until = START + dt.timedelta(minutes=args.rows // args.devices + 2)
            return partitions.ensure_ahead(conn, START, until, args.partition_minutes)
    finally:
        engine.dispose()


class Readings:
    """Reading i: minute i // devices, device perm[i % devices]; handed out in batches."""

    def __init__(self, devices: int, rows: int, batch: int, seed: int) -> None:
        rng = random.Random(seed)
        self.devices = devices
        self.rows = rows
        self.batch = batch
        if devices < 4 * batch * 2:
            raise ValueError("devices must exceed 8 batches: records are reused per device")
        self.perm = list(range(devices))
        rng.shuffle(self.perm)
        self.sns = [f"CRFTQ{d:011d}" for d in range(devices)]
        self.offsets = [rng.randrange(60) for _ in range(devices)]
        self.temps = [Decimal(f"36.{t}0") for t in range(10)]
        self.records: list[HealthRecord | None] = [None] * devices
        self.next_batch = 0
        self.lock = threading.Lock()

    def take(self) -> list[HealthRecord] | None:
        """The next batch. Each device's record is built once and its timestamp moved on:
        building 24-field records (6.5 µs each) would make the client the bottleneck. Safe
        because a device comes back only `devices` readings later, long after the batch
        that carried it was written (devices > threads x batch)."""
        with self.lock:
            b = self.next_batch
            self.next_batch += 1
        first = b * self.batch
        if first >= self.rows:
            return None
        out = []
        seconds = dt.timedelta(seconds=1)
        for i in range(first, min(first + self.batch, self.rows)):
            minute, d = divmod(i, self.devices)
            d = self.perm[d]
            r = self.records[d]
            if r is None:
                r = self.records[d] = self.record(d, i)
            # the record is frozen; as bind_in_place does, set the slot directly
            object.__setattr__(r, "timestamp", START + (minute * 60 + self.offsets[d]) * seconds)
            out.append(r)
        return out

    def older_than(self, cutoff: dt.datetime) -> int:
        """How many of the readings handed out have a timestamp before `cutoff`."""
        handed = min(self.next_batch * self.batch, self.rows)
        old = 0
        for i in range(0, handed, self.devices):  # one minute of every device at a time
            minute = i // self.devices
            n = min(self.devices, handed - i)
            if START + dt.timedelta(minutes=minute + 1) <= cutoff:
                old += n
            elif START + dt.timedelta(minutes=minute) < cutoff:
                ok = {d for d in self.perm[:n]}
                limit = (cutoff - START - dt.timedelta(minutes=minute)).total_seconds()
                old += sum(1 for d in ok if self.offsets[d] < limit)
        return old

    def record(self, d: int, i: int) -> HealthRecord:
        return HealthRecord(
            device_sn=self.sns[d],
            timestamp=START,
            customer_id=1 + d % CUSTOMERS,
            org_id=100 + d % 50,
            user_id=1_000_000 + d,
            heart_rate=60 + (i % 40),
            blood_oxygen=95 + (i % 5),
            temperature=self.temps[i % 10],
            pressure_high=110 + (i % 20),
            pressure_low=70 + (i % 15),
            stress=20 + (i % 30),
            step=i % 5000,
            upload_method="wifi",
        )


COUNTERS = (
    "Innodb_buffer_pool_reads",  # pages read from disk: the hot set missed the pool
    "Innodb_buffer_pool_read_requests",
    "Innodb_buffer_pool_pages_flushed",  # dirty pages written back
    "Innodb_data_written",  # bytes, redo and doublewrite included
)


def status(engine: Engine, names: tuple[str, ...]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Innodb_%%'").all()
    found = {k: v for k, v in rows}
    return {n: int(found[n]) for n in names}


def index_sizes(root: Engine) -> dict[str, float]:
    """MB per index of the health table (all partitions), from InnoDB's persistent stats:
    what the law in docs/capacity.md divides by rows (bytes per reading per index)."""
    with root.connect() as conn:
        conn.exec_driver_sql(f"ANALYZE TABLE {DATABASE}.t_user_health_data").all()
        rows = conn.exec_driver_sql(
            "SELECT index_name, SUM(stat_value) FROM mysql.innodb_index_stats "
            "WHERE database_name = %s AND (table_name = 't_user_health_data' "
            "OR table_name LIKE 't_user_health_data#P#%%') "
            "AND stat_name = 'size' GROUP BY index_name",
            (DATABASE,),
        ).all()
    return {str(name): round(int(pages) * 16384 / 2**20, 1) for name, pages in rows}


def files_bytes(datadir: Path) -> int:
    """Allocated bytes of the health table's files (all partitions): data + indexes."""
    total = 0
    for entry in os.scandir(datadir / DATABASE):
        if entry.name.startswith("t_user_health_data") and (
            entry.name.endswith(".ibd") or ".MY" in entry.name
        ):
            total += entry.stat().st_blocks * 512
    return total


def rocksdb_bytes(datadir: Path) -> int:
    path = datadir / "#rocksdb"
    if not path.is_dir():
        return 0
    return sum(e.stat().st_blocks * 512 for e in os.scandir(path) if e.is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=200_000)
    p.add_argument("--rows", type=int, default=50_000_000)
    p.add_argument("--chunk", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--schema", choices=("shipped", "legacy", "legacy-tuned"), default="shipped")
    p.add_argument("--revision", default="head", help="shipped: the Alembic revision")
    p.add_argument("--sql", action="append", default=[], help="statements after the schema")
    p.add_argument(
        "--server-arg",
        dest="server_args",
        action="append",
        default=[],
        help="extra mariadbd option, e.g. --plugin-load-add=ha_rocksdb",
    )
    p.add_argument("--global", dest="globals", action="append", default=[], help="VAR=VALUE")
    p.add_argument(
        "--retention-at",
        type=int,
        default=0,
        help="at this many rows, run `health-consumer retention` beside the writers",
    )
    p.add_argument(
        "--retention-keep-minutes",
        type=float,
        default=30,
        help="its --keep-days, in minutes of the readings' clock",
    )
    p.add_argument("--retention-chunk", type=int, default=5000)
    p.add_argument(
        "--retention-exact",
        action="store_true",
        help="retention --exact: also chunk-delete the straddling partition's older half",
    )
    p.add_argument(
        "--partition-minutes",
        type=int,
        default=None,
        help="a partitioned table (0005): partitions of this length over the run's "
        "readings, as `health-consumer retention` keeps them ahead of the clocks "
        "(default: the sizing rule of docs/capacity.md for a 1 GB pool)",
    )
    p.add_argument("--max-seconds", type=float, default=float("inf"), help="stop after this")
    p.add_argument("--min-rate", type=float, default=0, help="stop below this rows/s chunk")
    p.add_argument("--runtime", default=str(ROOT / ".runtime" / "growth"))
    p.add_argument("--port", type=int, default=3417)
    p.add_argument("--keep-server", action="store_true")
    p.add_argument("--label", default="")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    runtime = Path(args.runtime)
    with private_server(runtime, args.port, args.keep_server, args.server_args) as server:
        url = build_schema(server, args.schema, args.revision, args.sql)
        split = add_partitions(url, args)
        root = create_engine(f"{server}/mysql")
        with root.begin() as conn:
            for kv in args.globals:
                name, value = kv.split("=", 1)
                conn.exec_driver_sql(f"SET GLOBAL {name} = {value}")
            pool_mb = conn.exec_driver_sql("SELECT @@innodb_buffer_pool_size").scalar_one()
            keys = conn.exec_driver_sql("SHOW CREATE TABLE growth.t_user_health_data").all()
        mariadbd = pid_listening_on(args.port)
        assert mariadbd is not None, "the private server's pid"
        datadir = runtime / "mariadb" / "data"
        result = run(args, url, root, mariadbd, datadir)
        result.update(
            buffer_pool_mb=int(pool_mb) // 2**20,
            create_table=keys[0][1],
            partitions_added=split,
            command=" ".join(["bench/growth.py", *sys.argv[1:]]),
        )
        root.dispose()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def run(
    args: argparse.Namespace, url: str, root: Engine, mariadbd: int, datadir: Path
) -> dict[str, Any]:
    readings = Readings(args.devices, args.rows, args.batch, seed=20)
    engine = make_engine(url, pool_size=args.threads)
    sink = MySQLSink(engine)
    counters = COUNTERS
    chunks: list[dict[str, Any]] = []
    written = [0]
    stop = threading.Event()
    errors: list[BaseException] = []
    lock = threading.Lock()
    last = {
        "rows": 0,
        "t": time.monotonic(),
        "cpu": cpu_seconds(mariadbd),
        **status(root, counters),
    }
    started = last["t"]
    peak = [0]
    cleaner: dict[str, Any] = {}

    def sample(rows: int) -> None:
        now, cpu, st = time.monotonic(), cpu_seconds(mariadbd), status(root, counters)
        size = files_bytes(datadir) + rocksdb_bytes(datadir)
        peak[0] = max(peak[0], size)
        n = rows - last["rows"]
        chunk = {
            "rows_in_table": rows,
            "rows_per_s": round(n / (now - last["t"]), 1),
            "mariadb_us_per_row": round((cpu - last["cpu"]) * 1e6 / n, 2),
            "bp_reads_per_row": round((st[counters[0]] - last[counters[0]]) / n, 3),
            "bp_read_requests_per_row": round((st[counters[1]] - last[counters[1]]) / n, 1),
            "pages_flushed_per_row": round((st[counters[2]] - last[counters[2]]) / n, 3),
            "bytes_written_per_row": round((st[counters[3]] - last[counters[3]]) / n),
            "table_gb": round(size / 1e9, 3),
            "elapsed_s": round(now - started, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "retention_running": cleaner.get("running", False),
        }
        chunks.append(chunk)
        print(json.dumps(chunk), flush=True)
        last.update(rows=rows, t=now, cpu=cpu, **st)
        if chunk["rows_per_s"] < args.min_rate or now - started > args.max_seconds:
            stop.set()

    def clean(rows: int) -> None:
        """`health-consumer retention` at the readings' clock of now, beside the writers."""
        now = START + dt.timedelta(minutes=rows / args.devices)
        cutoff = now - dt.timedelta(minutes=args.retention_keep_minutes)
        cleaner.update(
            started_at_rows=rows, started_s=round(time.monotonic() - started, 1), cutoff=cutoff
        )
        t0 = time.monotonic()
        try:
            done = retention(
                url,
                args.retention_keep_minutes / 1440,
                now=now,
                chunk_rows=args.retention_chunk,
                partition_minutes=args.partition_minutes,
                exact=args.retention_exact,
            )
            cleaner.update(
                deleted_rows=done.deleted_rows,
                chunks=done.chunks,
                dropped_partitions=done.dropped_partitions,
                dropped_rows_estimate=done.dropped_rows_estimate,
                statements=[s[:200] for s in done.statements],
                # what is gone: everything before this (partitions), or before the cutoff
                gone_before=done.cutoff if args.retention_exact else done.dropped_before,
            )
        except BaseException as exc:  # reported in the result
            cleaner["error"] = repr(exc)
        cleaner.update(
            running=False,
            seconds=round(time.monotonic() - t0, 1),
            ended_at_rows=written[0],
        )
        print(json.dumps({"retention": cleaner}, default=str), flush=True)

    def writer() -> None:
        try:
            while not stop.is_set():
                batch = readings.take()
                if batch is None:
                    return
                result = sink.write(batch, [])
                if result.inserted != len(batch):
                    raise RuntimeError(f"{len(batch) - result.inserted} readings not inserted")
                with lock:
                    written[0] += len(batch)
                    due = written[0] - last["rows"] >= args.chunk
                    if due:
                        sample(written[0])
                    if args.retention_at and written[0] >= args.retention_at and not cleaner:
                        cleaner["running"] = True
                        threading.Thread(target=clean, args=(written[0],)).start()
        except BaseException as exc:  # reported below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if written[0] > last["rows"]:
        sample(written[0])
    engine.dispose()
    if errors:
        raise errors[0]
    with root.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {DATABASE}.t_user_health_data")
        stored = int(rows.scalar_one())
    gone = cleaner.get("gone_before")
    expected = written[0] - (readings.older_than(gone) if gone else 0)
    if stored != expected:
        raise RuntimeError(f"{written[0]} written, {stored} stored, {expected} expected")
    if cleaner.get("running"):
        raise RuntimeError("the run ended before retention did: give it more rows")
    index_mb = index_sizes(root)
    tail = [c for c in chunks if c["rows_in_table"] > 0.8 * written[0]]
    return {
        "label": args.label,
        "schema": args.schema,
        "revision": args.revision,
        "sql": args.sql,
        "globals": args.globals,
        "server_args": args.server_args,
        "devices": args.devices,
        "target_rows": args.rows,
        "rows": written[0],
        "stopped_early": written[0] < args.rows,
        "threads": args.threads,
        "batch": args.batch,
        "seconds": round(time.monotonic() - started, 1),
        "peak_table_gb": round(peak[0] / 1e9, 3),
        "min_chunk_rows_per_s": min(c["rows_per_s"] for c in chunks),
        "last_fifth_rows_per_s": round(sum(c["rows_per_s"] for c in tail) / max(1, len(tail)), 1),
        "index_mb_at_end": index_mb,
        "retention": {k: str(v) if isinstance(v, dt.datetime) else v for k, v in cleaner.items()}
        or None,
        "chunks": chunks,
    }


if __name__ == "__main__":
    sys.exit(main())
