"""Gateway scenarios of `make bench`: the real `health-gateway` (GATEWAY_WORKERS workers, 2
by default) in front of a fresh topic, with one consumer replica writing to a fresh
database, all on the same machine as Kafka and MariaDB.

- gateway_saturation: `wrk` (closed loop, BENCH_GW_CONNECTIONS connections) posts one
  reading per upload for BENCH_GW_SATURATION_S; uploads/s = 200s / seconds. Every upload
  is a new (device, timestamp), and the run waits until the DB holds one row per 200.
- gateway_2k: uploads at a fixed BENCH_GW_RATE (2,000/s) for BENCH_GW_FIXED_S. wrk cannot
  hold a fixed rate (wrk2 is not in Debian), so `gateway.client` paces an open loop with
  aiohttp over many connections, latency measured from each upload's due time (no
  coordinated omission); p50/p95/p99 of HTTP latency, and HTTP accept (the 200) -> DB row
  (the row's create_time) for every upload.
Targets on 2 cores: >= 5,000 uploads/s; p95 <= 50 ms at 2,000/s.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.client import Sent, post_uploads  # noqa: E402
from tests.integration.gateway_stack import GatewayProcess  # noqa: E402
from tests.integration.stack import KAFKA, Stack, drop_stack, make_stack, wait_for  # noqa: E402

LUA = ROOT / "bench" / "gateway_upload.lua"
SATURATION_S = float(os.environ.get("BENCH_GW_SATURATION_S", "30"))
CONNECTIONS = int(os.environ.get("BENCH_GW_CONNECTIONS", "64"))
FIXED_RATE = float(os.environ.get("BENCH_GW_RATE", "2000"))
FIXED_S = float(os.environ.get("BENCH_GW_FIXED_S", "30"))
WORKERS = os.environ.get("BENCH_GW_WORKERS", "2")
QUIET = {"LOG_LEVEL": "WARNING"}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


_GATEWAYS: list[GatewayProcess] = []


def _start(stack: Stack) -> tuple[Any, GatewayProcess]:
    consumer = stack.consumer(**QUIET).start()
    gateway = GatewayProcess(
        {
            "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
            "GATEWAY_KAFKA_TOPIC": stack.topic,
            "GATEWAY_WORKERS": WORKERS,
            "GATEWAY_LOG_LEVEL": "WARNING",
        }
    )
    _GATEWAYS.append(gateway)
    return consumer, gateway.start()


def _drop(stack: Stack) -> None:
    """Stop the gateway (even after a failure) before the stack's topic goes away."""
    while _GATEWAYS:
        _GATEWAYS.pop().stop()
    drop_stack(stack)


def saturation() -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: run scripts/install-tools.sh (Debian's wrk package)")
    stack = make_stack()
    try:
        consumer, gateway = _start(stack)
        cmd = [
            wrk, "-t2", f"-c{CONNECTIONS}", f"-d{int(SATURATION_S)}s", "--latency",
            "-s", str(LUA), gateway.url,
        ]  # fmt: skip
        env = {**os.environ, "WRK_SN_PREFIX": "BENCH"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        print(done.stdout, flush=True)
        found = re.search(r"^WRK_JSON (.*)$", done.stdout, re.M)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
        stats = json.loads(found.group(1))
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
        refused = int(non_2xx.group(1)) if non_2xx else 0
        # Only the uploads: /readyz and the /metrics scrapes answer 200 too, and counting them
        # waited for rows that never come.
        accepted = int(
            gateway.metric(
                "health_gateway_requests_total", code="200", handler="/upload_health_data"
            )
        )
        wait_for(lambda: stack.health_rows() >= accepted, 600, 1.0, f"{accepted} rows")
        rows = stack.health_rows()
        gateway.stop()
        consumer.stop()
        return {
            "tool": "wrk (closed loop)",
            "connections": CONNECTIONS,
            "gateway_workers": int(WORKERS),
            "seconds": stats["seconds"],
            "requests": stats["requests"],
            "non_2xx": refused,
            "uploads_200": accepted,
            "uploads_per_s": round(accepted / stats["seconds"], 1),
            "p50_ms": stats["p50_ms"],
            "p95_ms": stats["p95_ms"],
            "p99_ms": stats["p99_ms"],
            "socket_errors": {k: v for k, v in stats.items() if k.startswith("errors_")},
            "db_rows": rows,
        }
    finally:
        _drop(stack)


def _bodies(n: int) -> tuple[list[bytes], list[tuple[str, str]]]:
    start = dt.datetime(2025, 6, 1)
    bodies: list[bytes] = []
    keys: list[tuple[str, str]] = []
    for i in range(n):
        sn = f"FIX{i % 2000:06d}"
        ts = (start + dt.timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        reading = {
            "deviceSn": sn, "heart_rate": 60 + i % 40, "blood_oxygen": 98,
            "body_temperature": "36.5", "step": i, "distance": "0.0", "calorie": "0.0",
            "latitude": "22.543096", "longitude": "114.057865", "altitude": "0",
            "stress": 30, "upload_method": "wifi", "blood_pressure_systolic": 115,
            "blood_pressure_diastolic": 75, "timestamp": ts,
        }  # fmt: skip
        bodies.append(orjson.dumps({"data": reading}))
        keys.append((sn, ts))
    return bodies, keys


def fixed_rate() -> dict[str, Any]:
    stack = make_stack()
    try:
        consumer, gateway = _start(stack)
        bodies, keys = _bodies(int(FIXED_RATE * FIXED_S))
        results: list[Sent] = []
        started = time.monotonic()
        post_uploads(
            gateway.url,
            iter(bodies),
            rate=FIXED_RATE,
            duration_s=FIXED_S,
            connections=256,
            on_sent=results.append,
        )
        wall = time.monotonic() - started
        statuses = Counter(r.status for r in results)
        accepted = {keys[r.index]: r.answered for r in results if r.status == 200}
        wait_for(lambda: stack.health_rows() >= len(accepted), 600, 1.0, "all rows")
        rows = stack.rows(
            "SELECT device_sn, DATE_FORMAT(timestamp, '%Y-%m-%d %H:%i:%s'), "
            "UNIX_TIMESTAMP(create_time) FROM t_user_health_data"
        )
        to_db = sorted(
            float(ct) - accepted[(sn, ts)] for sn, ts, ct in rows if (sn, ts) in accepted
        )
        http = sorted(r.latency_s for r in results if r.status == 200)
        gateway.stop()
        consumer.stop()
        return {
            "tool": "gateway.client (aiohttp open loop, 256 connections)",
            "gateway_workers": int(WORKERS),
            "target_rate": FIXED_RATE,
            "achieved_rate": round(len(results) / wall, 1),
            "seconds": FIXED_S,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "p50_ms": _pct(http, 0.50),
            "p95_ms": _pct(http, 0.95),
            "p99_ms": _pct(http, 0.99),
            "max_ms": _pct(http, 1.0),
            "accept_to_db_rows": len(to_db),
            "accept_to_db_p50_ms": _pct(to_db, 0.50),
            "accept_to_db_p95_ms": _pct(to_db, 0.95),
            "accept_to_db_p99_ms": _pct(to_db, 0.99),
        }
    finally:
        _drop(stack)


if __name__ == "__main__":
    print(json.dumps({"saturation": saturation(), "fixed_rate": fixed_rate()}, indent=2))
