"""MariaDB CPU per row of the health insert, by write method and index set (no Kafka).

Each variant writes the same rows (bench/bulk.py: the drain scenarios' uploads, decoded
and bound before the clock) into a freshly migrated database, measured like `make bench`'s
bulk_insert_fresh: mariadbd utime+stime over exactly the inserts (whole process: shared
with other users of the server) and the server threads of our own sessions only.
Variants run in rotation, --repeat times; the table shows each one's median and minimum
(on a shared machine the least disturbed run is the closest to the true cost).

    .venv/bin/python bench/db_variants.py [--messages 100000] [--repeat 3] [--batch 1000]
        [--only load_data ...]
Results: bench/results/db_variants.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import table  # noqa: E402
from bench.run import bulk_insert, private_stack  # noqa: E402

# Dropped by migration 0003; added back to measure what it costs.
SECONDARY = "idx_health_customer_ts"
VARIANTS: dict[str, tuple[str, ...]] = {
    f"insert + {SECONDARY} (before issue 9)": ("--mode", "insert", "--add-index", SECONDARY),
    "insert": ("--mode", "insert"),
    f"load_data + {SECONDARY}": ("--mode", "load_data", "--add-index", SECONDARY),
    "load_data (current)": ("--mode", "load_data"),
}
KEYS = ("rows_per_s", "mariadb_us_per_row", "mariadb_own_sessions_us_per_row", "client_us_per_row")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--only", action="append", default=[], help="run the variants whose name contains this"
    )
    args = parser.parse_args()
    os.environ["BENCH_BULK_BATCH"] = str(args.batch)
    variants = {
        name: extra
        for name, extra in VARIANTS.items()
        if not args.only or any(o in name for o in args.only)
    }
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for i in range(args.repeat):
        for name, extra in variants.items():
            for attempt in (1, 2):  # the shared MariaDB gets restarted by others' tests
                try:
                    with private_stack() as stack:
                        r = bulk_insert(
                            stack.database_url,
                            args.seed,
                            args.messages,
                            ("--batch", str(args.batch), *extra),
                        )
                except Exception as exc:
                    print(f"  run {i + 1} {name}: attempt {attempt} failed: {exc}", flush=True)
                    time.sleep(10)
                    continue
                if r.get("mariadb_us_per_row") is not None:
                    break
            else:
                continue
            runs[name].append(r)
            shown = (*KEYS, "load_data_redone")
            print(
                f"  run {i + 1} {name}: " + ", ".join(f"{k}={r.get(k)}" for k in shown),
                flush=True,
            )
    summary: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        summary[name] = {"rows": rs[0]["rows"], "runs": len(rs)}
        for k in KEYS:
            values = [r[k] for r in rs if r.get(k) is not None]
            if values:
                summary[name][k + "_median"] = round(statistics.median(values), 2)
                best = max(values) if k == "rows_per_s" else min(values)
                summary[name][k + "_best"] = round(best, 2)
        summary[name]["loadavg_1m"] = [r.get("loadavg_1m") for r in rs]
    out = {
        "command": "bench/db_variants.py " + " ".join(sys.argv[1:]),
        "variants": summary,
        "runs": runs,
    }
    (ROOT / "bench" / "results" / "db_variants.json").write_text(json.dumps(out, indent=2) + "\n")
    header = [
        "variant",
        "rows/s (med)",
        "mariadb µs/row med/min",
        "own sessions med/min",
        "client µs/row med",
        "load 1m",
    ]
    rows = [
        [
            name,
            f"{s.get('rows_per_s_median', 0):,.0f}",
            f"{s.get('mariadb_us_per_row_median')} / {s.get('mariadb_us_per_row_best')}",
            f"{s.get('mariadb_own_sessions_us_per_row_median')} / "
            f"{s.get('mariadb_own_sessions_us_per_row_best')}",
            str(s.get("client_us_per_row_median")),
            str(s["loadavg_1m"]),
        ]
        for name, s in summary.items()
    ]
    print(table(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
