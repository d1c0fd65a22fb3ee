"""Decode throughput on one core: the consumer's budget is >= 80k single-reading msgs/s.

Messages are generated like real watch uploads (varying SNs, vitals, "%.1f" text fields,
GPS mostly "0"), so the decoder's small value caches see a realistic hit rate rather than
one message repeated. Prints one JSON object; run with `python bench/bench_decode.py`.

`--memory` instead reports what decoding one hostile message costs: the peak RSS growth
and the time, each case in a fresh process so that one case's heap does not hide the next.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from schemas.decode import (
    MAX_MESSAGE_BYTES,
    DecodedMessage,
    MessageError,
    decode_message,
    decode_message_reference,
)


def reading(rng: random.Random, sn: str, ts: datetime) -> dict[str, Any]:
    worn = rng.random() < 0.85  # off the wrist: vitals read 0 ("not measured")
    step = rng.randrange(0, 20_000)
    gps = rng.random() < 0.3
    return {
        "deviceSn": sn,
        "heart_rate": rng.randrange(55, 120) if worn else 0,
        "blood_oxygen": rng.randrange(94, 101) if worn else 0,
        "body_temperature": f"{rng.uniform(36.0, 37.4):.1f}" if worn else "0.0",
        "step": step,
        "distance": f"{step * 0.0007:.1f}",
        "calorie": f"{step * 0.04:.1f}",
        "latitude": f"{rng.uniform(22.4, 22.7):.6f}" if gps else "0",
        "longitude": f"{rng.uniform(113.8, 114.3):.6f}" if gps else "0",
        "altitude": f"{rng.uniform(0, 80):.1f}" if gps else "0",
        "stress": rng.randrange(0, 100) if worn else 0,
        "upload_method": rng.choice(("wifi", "wifi", "4g", "bluetooth")),
        "blood_pressure_systolic": rng.randrange(100, 140) if worn else 0,
        "blood_pressure_diastolic": rng.randrange(60, 90) if worn else 0,
        "timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"),
    }


def messages(count: int, size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    start = datetime(2025, 5, 31, 8, 0, 0)
    out = []
    for i in range(count):
        sn = f"CRFTQ2340{rng.randrange(10_000_000):07d}"
        base = start + timedelta(seconds=i * 7)
        data = [reading(rng, sn, base + timedelta(minutes=j)) for j in range(size)]
        out.append(orjson.dumps({"data": data}))
    return out


def measure(
    decode: Callable[[bytes], DecodedMessage], payloads: list[bytes], seconds: float, rounds: int
) -> dict[str, int]:
    """Median of `rounds` timed passes (each at least `seconds` long) over `payloads`.

    Also reports the rate per CPU second of this process, which other load on the machine
    (a shared CI runner) disturbs far less than the wall-clock rate.
    """
    readings = sum(len(decode(p).records) for p in payloads)  # warms caches, checks validity
    if readings != sum(len(orjson.loads(p)["data"]) for p in payloads):
        raise SystemExit("benchmark payloads must all be valid")
    wall_rates, cpu_rates = [], []
    for _ in range(rounds):
        passes = 0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        while True:
            for payload in payloads:
                decode(payload)
            passes += 1
            wall = time.perf_counter() - wall0
            if wall >= seconds:
                break
        cpu = time.process_time() - cpu0
        wall_rates.append(passes * len(payloads) / wall)
        cpu_rates.append(passes * len(payloads) / cpu)
    per_message = readings / len(payloads)
    msgs = statistics.median(wall_rates)
    cpu_msgs = statistics.median(cpu_rates)
    return {
        "messages_per_s": round(msgs),
        "readings_per_s": round(msgs * per_message),
        "messages_per_cpu_s": round(cpu_msgs),
        "readings_per_cpu_s": round(cpu_msgs * per_message),
    }


def hostile_payloads() -> dict[str, tuple[bytes, int]]:
    """name -> (message, max_message_bytes to decode it with)."""
    # 10^6 readings of 99 bytes (+ a comma): the 100 MB cache flush of issue 7 (F9).
    small = b'{"deviceSn":"CRFTQ23409001890","timestamp":"2025-05-31 21:18:24","heart_rate":66}'
    small = small[:-1] + b',"x":"' + b"0" * (99 - len(small) - 7) + b'"}'
    hundred_mb = b'{"data":[' + b",".join([small] * 1_000_000) + b"]}"
    one = messages(1, 1, seed=3)[0][len(b'{"data":[') : -len(b"]}")]
    # The most objects 1 MiB can hold: ~27x its size in memory.
    tiny = b'{"data":[' + b",".join([b"{}"] * (MAX_MESSAGE_BYTES // 3 - 4)) + b"]}"
    ignored = (
        b'{"data":{"deviceSn":"SN1","timestamp":"2025-05-31 21:18:24","x":['
        + b",".join([b"[]"] * (MAX_MESSAGE_BYTES // 3 - 40))
        + b"]}}"
    )
    return {
        "100MB_1e6_readings": (hundred_mb, MAX_MESSAGE_BYTES),
        "100MB_1e6_readings_uncapped": (hundred_mb, len(hundred_mb)),  # as before the cap
        "1MiB_of_empty_readings": (tiny, MAX_MESSAGE_BYTES),
        "1MiB_of_empty_arrays_in_an_ignored_field": (ignored, MAX_MESSAGE_BYTES),
        "1000_watch_readings": (b'{"data":[' + b",".join([one] * 1000) + b"]}", MAX_MESSAGE_BYTES),
    }


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/self/status (Linux only)")


def memory_case(path: str, max_message_bytes: int) -> dict[str, Any]:
    """Decode the message in `path`; growth = peak RSS (VmHWM) after - RSS before."""
    with open(path, "rb") as f:
        value = f.read()
    before_kb = _status_kb("VmRSS")
    start = time.perf_counter()
    try:
        decoded = decode_message(value, max_message_bytes=max_message_bytes)
        outcome = f"{len(decoded.records)} records, {len(decoded.errors)} errors"
    except MessageError as exc:
        outcome = exc.reason
    elapsed_ms = (time.perf_counter() - start) * 1000
    return {
        "bytes": len(value),
        "outcome": outcome,
        "rss_growth_mb": round((_status_kb("VmHWM") - before_kb) / 1024, 1),
        "ms": round(elapsed_ms, 1),
    }


def memory_report() -> dict[str, Any]:
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (value, cap) in hostile_payloads().items():
            path = os.path.join(tmp, name)
            with open(path, "wb") as f:
                f.write(value)
            child = subprocess.run(
                [sys.executable, __file__, "--memory-case", path, "--cap", str(cap)],
                check=True,
                capture_output=True,
                text=True,
            )
            report[name] = json.loads(child.stdout)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--array-size", type=int, default=50)
    parser.add_argument("--reference", action="store_true", help="also time the pydantic path")
    parser.add_argument("--memory", action="store_true", help="RSS and time of hostile messages")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    parser.add_argument("--cap", type=int, default=MAX_MESSAGE_BYTES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, args.cap)))
        return
    if args.memory:
        print(json.dumps(memory_report(), indent=2))
        return

    single = messages(20_000, 1, seed=1)
    arrays = messages(400, args.array_size, seed=2)
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "single_reading": measure(decode_message, single, args.seconds, args.rounds),
        f"array_{args.array_size}": measure(decode_message, arrays, args.seconds, args.rounds),
    }
    if args.reference:
        result["reference_single_reading"] = measure(
            decode_message_reference, single, args.seconds, args.rounds
        )
        result[f"reference_array_{args.array_size}"] = measure(
            decode_message_reference, arrays, args.seconds, args.rounds
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
