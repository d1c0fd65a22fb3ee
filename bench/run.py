"""`make bench`: throughput and latency of real replicas against the local stack.

Scenarios (each on a fresh topic and database, so runs never disturb each other):
- drain_1_replica / drain_2_replicas: a pre-filled topic drained by 1 or 2 replicas;
  records/s = rows / (last row's create_time - first row's create_time), plus wall time.
- latency_5k: one replica, the producer paced at 5,000 records/s for BENCH_LATENCY_S;
  end-to-end = DB create_time of each row - the moment the producer sent it
  (the Kafka CreateTime), p50/p95/p99; the consumer's own histogram p95 is reported too.
- gateway_saturation / gateway_2k: the ingest gateway in front of one replica
  (bench/bench_gateway.py): uploads/s at saturation (wrk), latency at 2,000 uploads/s.
Targets (2 cores, broker and DB on the same machine): >= 25k/s with one replica,
>= 50k/s with two, p95 <= 300 ms at 5k/s; gateway >= 5,000 uploads/s, p95 <= 50 ms at
2,000/s. Results: bench/results/<scenario>.json.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_gateway  # noqa: E402
from consumer.tools.replicas import histogram_quantile, total  # noqa: E402
from consumer.tools.simulate import ReadingGenerator  # noqa: E402
from schemas.decode import decode_message  # noqa: E402
from tests.integration.stack import KAFKA, Stack, drop_stack, make_stack, wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DRAIN_MESSAGES = int(os.environ.get("BENCH_DRAIN_MESSAGES", "300000"))
LATENCY_S = float(os.environ.get("BENCH_LATENCY_S", "60"))
LATENCY_RATE = float(os.environ.get("BENCH_LATENCY_RATE", "5000"))
REPLICA_ENV = {"LOG_LEVEL": "WARNING"}


def prefill(stack: Stack, messages: int, seed: int) -> int:
    gen = ReadingGenerator(devices=2000, seed=seed, array_ratio=0.05, slow_field_ratio=0.02)
    producer = Producer(
        {
            "bootstrap.servers": KAFKA,
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
        }
    )
    readings = 0
    for _ in range(messages):
        m = gen.next_message()
        while True:
            try:
                producer.produce(stack.topic, key=m.key, value=m.value)
                break
            except BufferError:
                producer.poll(0.05)
        readings += m.readings
    producer.flush(120)
    return readings


def drain(replicas: int, seed: int) -> dict[str, Any]:
    stack = make_stack()
    try:
        t0 = time.monotonic()
        readings = prefill(stack, DRAIN_MESSAGES, seed)
        print(
            f"  prefilled {DRAIN_MESSAGES} messages / {readings} readings "
            f"in {time.monotonic() - t0:.1f}s",
            flush=True,
        )
        started = time.monotonic()
        procs = [stack.consumer(**REPLICA_ENV) for _ in range(replicas)]
        for p in procs:
            p.start()
        wait_for(
            lambda: stack.health_rows() >= readings, 900, interval=1.0, what=f"{readings} rows"
        )
        wall = time.monotonic() - started
        first, last = stack.rows(
            "SELECT UNIX_TIMESTAMP(MIN(create_time)), UNIX_TIMESTAMP(MAX(create_time)) "
            "FROM t_user_health_data"
        )[0]
        rows = stack.health_rows()
        samples = [p.samples() for p in procs]
        for p in procs:
            p.stop()
        span = float(last) - float(first)
        return {
            "replicas": replicas,
            "messages": DRAIN_MESSAGES,
            "records": rows,
            "drain_seconds": round(span, 3),
            "records_per_s": round(rows / span, 1) if span > 0 else None,
            "wall_seconds_including_startup": round(wall, 3),
            "duplicates": total(samples, "health_consumer_records_duplicate_total"),
            "p95_batch_size": histogram_quantile(
                samples, "health_consumer_batch_size_records", 0.95
            ),
        }
    finally:
        drop_stack(stack)


def latency(seed: int) -> dict[str, Any]:
    stack = make_stack()
    try:
        proc = stack.consumer(**REPLICA_ENV).start()
        gen = ReadingGenerator(devices=1000, seed=seed, array_ratio=0.0, slow_field_ratio=0.02)
        producer = Producer(
            {"bootstrap.servers": KAFKA, "partitioner": "murmur2_random", "linger.ms": 5}
        )
        sent: dict[tuple[str, Any], float] = {}
        started = time.monotonic()
        i = 0
        while (elapsed := time.monotonic() - started) < LATENCY_S:
            if i > LATENCY_RATE * elapsed:
                time.sleep(0.001)
                continue
            m = gen.next_message()
            record = decode_message(m.value).records[0]
            producer.produce(stack.topic, key=m.key, value=m.value)
            sent[(record.device_sn, record.timestamp)] = time.time()
            producer.poll(0)
            i += 1
        producer.flush(30)
        achieved = i / (time.monotonic() - started)
        wait_for(lambda: stack.health_rows() >= len(sent), 120, what="all rows")
        rows = stack.rows(
            "SELECT device_sn, timestamp, UNIX_TIMESTAMP(create_time) FROM t_user_health_data"
        )
        lat = sorted(float(ct) - sent[(sn, ts)] for sn, ts, ct in rows if (sn, ts) in sent)
        samples = [proc.samples()]
        proc.stop()

        def pct(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1)

        own = histogram_quantile(samples, "health_consumer_end_to_end_latency_seconds", 0.95)
        return {
            "target_rate": LATENCY_RATE,
            "achieved_rate": round(achieved, 1),
            "seconds": LATENCY_S,
            "records": len(lat),
            "p50_ms": pct(0.50),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 1),
            "consumer_histogram_p95_ms": None if own is None else round(own * 1000, 1),
        }
    finally:
        drop_stack(stack)


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    scenarios = {
        "drain_1_replica": (lambda: drain(1, seed=11), ("records_per_s", 25_000)),
        "drain_2_replicas": (lambda: drain(2, seed=12), ("records_per_s", 50_000)),
        "latency_5k": (lambda: latency(seed=13), ("p95_ms", 300)),
        "gateway_saturation": (bench_gateway.saturation, ("uploads_per_s", 5_000)),
        "gateway_2k": (bench_gateway.fixed_rate, ("p95_ms", 50)),
    }
    summary_path = RESULTS / "summary.json"
    # BENCH_ONLY runs update their scenarios and keep the others' last results.
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name, (run, (key, target)) in scenarios.items():
        if only and name not in only:
            continue
        print(f"bench {name} ...", flush=True)
        result = run()
        met = result[key] is not None and (
            result[key] <= target if key.endswith("_ms") else result[key] >= target
        )
        result.update(
            {
                "scenario": name,
                "target": {key: target},
                "target_met": met,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2), flush=True)
        summary[name] = {key: result[key], "target": target, "met": met}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
