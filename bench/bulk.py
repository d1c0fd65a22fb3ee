"""Bulk-insert ceiling: the benchmark's rows written by the consumer's own DB path, no Kafka.

Regenerates the uploads of a scenario (same seed, same bytes), decodes and binds them
as a replica does on a database without the legacy device tables (customer 0), all before
the clock starts. Then writes them with `consumer.sinks.mysql.MySQLSink.write` in batches
of --batch records (one transaction per batch, as a replica's flush) from --threads
threads, each with its own pooled connection of `make_engine`.

Variants, to size database-side optimizations (same rows, same table):
- --mode load_data (the default, what the consumer does): the health rows through LOAD
  DATA LOCAL INFILE ... IGNORE from memory; --mode insert: the rendered multi-row
  `INSERT ... ON DUPLICATE KEY UPDATE id = id` (MySQLSink(load_data=False));
- --drop-index NAME: drop that secondary index of t_user_health_data first;
- --add-index NAME: add one of ADDABLE (an index an earlier schema had) first;
- --duplicate-ratio R: after each record, with probability R, a copy of one of the last
  3,000 (a retried upload: inside the batch or across batches), so the sink's proof of
  skipped rows (issue 16) is timed too.

Handshake, so the caller can snapshot MariaDB's per-thread CPU around exactly the inserts:
prints `READY <local port of each DB connection>` once the connections are open, waits for
a line on stdin, inserts, prints one JSON line (rows, seconds, cpu_seconds of this process).

    .venv/bin/python bench/bulk.py --database-url URL --messages N --seed S [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import watch_uploads  # noqa: E402
from consumer.pipeline.binding import UNBOUND, bind  # noqa: E402
from consumer.sinks.mysql import MySQLSink, make_engine  # noqa: E402
from schemas.decode import decode_message  # noqa: E402
from schemas.record import HealthRecord  # noqa: E402

# Indexes of earlier schemas, to measure what they cost (0003 dropped the first).
ADDABLE = {"idx_health_customer_ts": "(customer_id, `timestamp`)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--array-ratio", type=float, default=0.2)
    parser.add_argument("--array-size", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", choices=("insert", "load_data"), default="load_data")
    parser.add_argument("--drop-index", action="append", default=[])
    parser.add_argument("--add-index", action="append", default=[], choices=sorted(ADDABLE))
    parser.add_argument("--duplicate-ratio", type=float, default=0.0)
    args = parser.parse_args()

    records: list[HealthRecord] = []
    for u in watch_uploads(
        args.messages,
        seed=args.seed,
        devices=args.devices,
        array_ratio=args.array_ratio,
        array_size=args.array_size,
    ):
        records.extend(bind(r, UNBOUND) for r in decode_message(u.value).records)
    if args.duplicate_ratio > 0:
        rng = random.Random(args.seed)
        with_copies: list[HealthRecord] = []
        for r in records:
            with_copies.append(r)
            if rng.random() < args.duplicate_ratio:
                with_copies.append(with_copies[-rng.randint(1, min(3000, len(with_copies)))])
        records = with_copies
    batches = [records[i : i + args.batch] for i in range(0, len(records), args.batch)]

    engine = make_engine(args.database_url, pool_size=args.threads)
    with engine.begin() as conn:
        for index in args.drop_index:
            conn.exec_driver_sql(f"ALTER TABLE t_user_health_data DROP INDEX `{index}`")
        for index in args.add_index:
            conn.exec_driver_sql(
                f"ALTER TABLE t_user_health_data ADD INDEX `{index}` {ADDABLE[index]}"
            )
    sink = MySQLSink(engine, load_data=args.mode == "load_data")

    def write(batch: list[HealthRecord]) -> int:
        return sink.write(batch, []).inserted

    # Open one connection per thread now, so connecting is not timed and the caller can
    # find their server threads; the pool hands the same ones back to the writers.
    conns = [engine.connect() for _ in range(args.threads)]
    ports = [c.connection.dbapi_connection._sock.getsockname()[1] for c in conns]  # type: ignore[union-attr]
    for c in conns:
        c.close()
    print("READY " + " ".join(str(p) for p in ports), flush=True)
    sys.stdin.readline()

    errors: list[BaseException] = []
    inserted = [0] * args.threads

    def writer(i: int) -> None:
        try:
            for batch in batches[i :: args.threads]:
                inserted[i] += write(batch)
        except BaseException as exc:  # reported, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(args.threads)]
    wall0, cpu0, t0 = time.perf_counter(), time.process_time(), time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu, t1 = time.perf_counter() - wall0, time.process_time() - cpu0, time.time()
    engine.dispose()
    if errors:
        raise errors[0]
    print(
        json.dumps(
            {
                "rows": len(records),
                "inserted": sum(inserted),
                "batches": len(batches),
                "batch_records": args.batch,
                "threads": args.threads,
                "mode": args.mode,
                "dropped_indexes": args.drop_index,
                "added_indexes": args.add_index,
                "load_data_redone": sink.load_data_redone,
                "duplicate_ratio": args.duplicate_ratio,
                "rows_refilled": getattr(sink, "rows_refilled", None),
                "seconds": round(wall, 4),
                "cpu_seconds": round(cpu, 4),
                "window": [t0, t1],
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
