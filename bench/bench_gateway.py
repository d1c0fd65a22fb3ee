"""Gateway scenarios of `make bench` (issue 19): the real `health-gateway` (BENCH_GW_WORKERS
worker processes, 1 by default like its setting) in front of a fresh topic, with consumer
replicas writing to a fresh database, all on the same machine as Kafka and MariaDB.

- gateway_floor: the gateway's own HTTP server (gateway.server, same protocol, same
  parser) answering a fixed 200 without Kafka, under the same wrk load as saturation:
  what the HTTP stack costs, so the rest is ours (split, produce, delivery reports).
- gateway_saturation: `wrk` (closed loop, BENCH_GW_CONNECTIONS connections) posts one
  reading per upload for BENCH_GW_SATURATION_S; uploads/s = 200s / seconds. Every upload
  is a new (device, timestamp), and the run waits until the DB holds one row per 200.
- gateway_2k: uploads at a fixed BENCH_GW_RATE (2,000/s) for BENCH_GW_FIXED_S. wrk cannot
  hold a fixed rate (wrk2 is not in Debian), so `gateway.client` paces an open loop over
  many connections, latency measured from each upload's due time (no coordinated
  omission); p50/p95/p99 of HTTP latency, and HTTP accept (the 200) -> DB row.
- gateway_demo_2k: what `make demo` does (its simulator's mix and HTTP client,
  consumer.tools.simulate --via-gateway, two replicas) at BENCH_GW_RATE: the rate achieved.

CPU per upload is utime+stime (/proc) of every gateway process (the supervisor and each
worker; all threads, librdkafka's included) over the load window, divided by the uploads
answered 200 in it; `gateway_us_per_process` has each process's share.
Targets (bench/report.py): <= 50 us per upload; >= 12,000 uploads/s with 0 errors and
every 200 in the database; p95 <= 50 ms and p99 <= 100 ms at 2,000/s; the demo's rate.
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
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.procstat import cpu_seconds, descendants  # noqa: E402
from gateway.client import Sent, post_uploads  # noqa: E402
from tests.integration.gateway_stack import GatewayProcess  # noqa: E402
from tests.integration.stack import (  # noqa: E402
    KAFKA,
    Stack,
    drop_stack,
    free_port,
    make_stack,
    wait_for,
)

LUA = ROOT / "bench" / "gateway_upload.lua"
SATURATION_S = float(os.environ.get("BENCH_GW_SATURATION_S", "30"))
# A fleet holds thousands of connections; 64 made wrk latency-bound (64 / 10 ms = 6,400/s
# whatever the gateway's speed): the acks take linger.ms + a broker round trip.
CONNECTIONS = int(os.environ.get("BENCH_GW_CONNECTIONS", "512"))
FIXED_RATE = float(os.environ.get("BENCH_GW_RATE", "2000"))
FIXED_S = float(os.environ.get("BENCH_GW_FIXED_S", "30"))
WORKERS = os.environ.get("BENCH_GW_WORKERS", "1")
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


class CpuWindow:
    """CPU seconds of a process tree (the gateway's supervisor and workers) over a window."""

    def __init__(self, pid: int) -> None:
        self.pids = [pid, *descendants(pid)]
        self.start = self._sample()

    def _sample(self) -> dict[int, float]:
        out = {}
        for pid in self.pids:
            try:
                out[pid] = cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        return out

    def per_upload(self, uploads: int) -> dict[str, Any]:
        """µs of CPU per upload: all processes together, and each one."""
        end = self._sample()
        used = {pid: end[pid] - self.start[pid] for pid in end if pid in self.start}
        n = max(uploads, 1)
        return {
            "gateway_us_per_upload": round(sum(used.values()) / n * 1e6, 1),
            "gateway_us_per_process": {
                f"{'supervisor' if i == 0 and len(self.pids) > 1 else 'worker'}-{pid}": round(
                    cpu / n * 1e6, 1
                )
                for i, (pid, cpu) in enumerate(used.items())
            },
        }


def _wrk(url: str, seconds: float) -> tuple[dict[str, Any], int, str]:
    """wrk's JSON summary, its non-2xx count and its output."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: run scripts/install-tools.sh (Debian's wrk package)")
    cmd = [
        wrk, "-t2", f"-c{CONNECTIONS}", f"-d{int(seconds)}s", "--latency",
        "-s", str(LUA), url,
    ]  # fmt: skip
    env = {**os.environ, "WRK_SN_PREFIX": "BENCH"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    print(done.stdout, flush=True)
    found = re.search(r"^WRK_JSON (.*)$", done.stdout, re.M)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    return json.loads(found.group(1)), int(non_2xx.group(1)) if non_2xx else 0, done.stdout


def floor() -> dict[str, Any]:
    """The HTTP stack alone: gateway.server answering a fixed 200, no Kafka, no parsing."""
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--floor-server", str(port)])
    try:
        wait_for(lambda: _answers(port), 30, 0.1, "the floor server")
        window = CpuWindow(server.pid)
        stats, refused, _ = _wrk(f"http://127.0.0.1:{port}", SATURATION_S)
        answered = stats["requests"] - refused
        return {
            "tool": "wrk (closed loop)",
            "server": "gateway.server.HttpServer, fixed 200 (no Kafka, no body parsing)",
            "connections": CONNECTIONS,
            "seconds": stats["seconds"],
            "requests": stats["requests"],
            "uploads_per_s": round(answered / stats["seconds"], 1),
            "p50_ms": stats["p50_ms"],
            "p95_ms": stats["p95_ms"],
            "p99_ms": stats["p99_ms"],
            **window.per_upload(answered),
        }
    finally:
        server.terminate()
        server.wait(30)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=1) as r:
            return int(r.status) == 200
    except OSError:
        return False


class _Fixed:
    """The floor's handler: every request answered the gateway's one-reading 200."""

    def __init__(self) -> None:
        from gateway.app import ONE_READING

        self.answer = ONE_READING

    def dispatch(self, request: Any, reply: Any) -> None:
        reply.send(self.answer)


def serve_floor(port: int) -> None:
    import asyncio

    import uvloop

    from gateway.app import INTERNAL
    from gateway.server import HttpServer, listen

    async def main() -> None:
        server = HttpServer(_Fixed(), max_body_bytes=1 << 20, internal_error=INTERNAL)
        await server.start(listen("127.0.0.1", port))
        await asyncio.Event().wait()

    uvloop.run(main())


def _drop(stack: Stack) -> None:
    """Stop the gateway (even after a failure) before the stack's topic goes away."""
    while _GATEWAYS:
        _GATEWAYS.pop().stop()
    drop_stack(stack)


def saturation() -> dict[str, Any]:
    stack = make_stack()
    try:
        consumer, gateway = _start(stack)
        assert gateway.proc is not None
        window = CpuWindow(gateway.proc.pid)
        stats, refused, _ = _wrk(gateway.url, SATURATION_S)
        # Only the uploads: /readyz and the /metrics scrapes answer 200 too, and counting them
        # waited for rows that never come.
        accepted = int(
            gateway.metric(
                "health_gateway_requests_total", code="200", handler="/upload_health_data"
            )
        )
        cpu = window.per_upload(accepted)
        wait_for(lambda: stack.health_rows() >= accepted, 600, 1.0, f"{accepted} rows")
        rows = stack.health_rows()
        gateway.stop()
        consumer.stop()
        socket_errors = {k: v for k, v in stats.items() if k.startswith("errors_")}
        return {
            "tool": "wrk (closed loop)",
            "connections": CONNECTIONS,
            "gateway_workers": int(WORKERS),
            "seconds": stats["seconds"],
            "requests": stats["requests"],
            "non_2xx": refused,
            "errors": refused + sum(socket_errors.values()),
            "uploads_200": accepted,
            "uploads_per_s": round(accepted / stats["seconds"], 1),
            "p50_ms": stats["p50_ms"],
            "p95_ms": stats["p95_ms"],
            "p99_ms": stats["p99_ms"],
            "socket_errors": socket_errors,
            "db_rows": rows,
            "missing_in_db": max(0, accepted - rows),
            **cpu,
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
        assert gateway.proc is not None
        window = CpuWindow(gateway.proc.pid)
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
        cpu = window.per_upload(len(accepted))
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
            "tool": "gateway.client (open loop, 256 connections)",
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
            "errors": len(results) - len(accepted),
            **cpu,
        }
    finally:
        _drop(stack)


def demo() -> dict[str, Any]:
    """`make demo`'s load through the gateway: its simulator mix and HTTP client, two
    replicas behind; the rate the simulator achieves is the target."""
    from consumer.tools.simulate import ReadingGenerator, simulate_via_gateway

    stack = make_stack()
    try:
        consumer, gateway = _start(stack)
        second = stack.consumer(**QUIET).start()
        assert gateway.proc is not None
        window = CpuWindow(gateway.proc.pid)
        client_cpu = time.process_time()
        summary = simulate_via_gateway(
            url=gateway.url,
            generator=ReadingGenerator(devices=500, seed=19, invalid_ratio=0.01),
            rate=FIXED_RATE,
            duration_s=FIXED_S,
            progress=False,
        )
        client_cpu = time.process_time() - client_cpu
        answered = sum(summary.http_status.values())
        cpu = window.per_upload(summary.sent_messages)
        gateway.stop()
        second.stop()
        consumer.stop()
        return {
            "tool": "consumer.tools.simulate --via-gateway (make demo's client)",
            "gateway_workers": int(WORKERS),
            "target_rate": FIXED_RATE,
            "achieved_rate": round(answered / summary.seconds, 1),
            "seconds": round(summary.seconds, 2),
            "statuses": {str(k): v for k, v in sorted(summary.http_status.items())},
            "delivery_errors": summary.delivery_errors,
            "client_us_per_upload": round(client_cpu / max(answered, 1) * 1e6, 1),
            **cpu,
        }
    finally:
        _drop(stack)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor-server"]:
        serve_floor(int(sys.argv[2]))
    else:
        print(json.dumps({"saturation": saturation(), "fixed_rate": fixed_rate()}, indent=2))
