"""`make demo`: the main job end to end on the local stack.

Migrations, topic, two consumer replicas, the ingest gateway, the simulator (500 devices,
60 s by default) posting its uploads to the gateway like watches do (watch -> gateway ->
Kafka -> consumer -> MySQL/Redis), then a summary of what landed where. Knobs:
DEMO_DEVICES, DEMO_RATE, DEMO_DURATION_S, DEMO_INVALID_RATIO, DEMO_GATEWAY_PORT (8080),
DEMO_DIRECT=1 (simulator straight into Kafka, no gateway), DEMO_KEEP_RUNNING=1 (leave the
replicas and the gateway up for Grafana/Prometheus).
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import create_engine, text

from consumer.db.migrate import upgrade_to_head
from consumer.settings import load_settings
from consumer.tools.replicas import ReplicaProcess, histogram_quantile, total
from consumer.tools.simulate import (
    SIMULATED_CUSTOMERS,
    ReadingGenerator,
    simulate,
    simulate_via_gateway,
)
from consumer.topics import admin_client, ensure_topic

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".runtime" / "logs"
# Rules are scoped by customer (as the legacy applies them): one set per simulated customer.
DEMO_RULES = (
    "INSERT INTO t_alert_rules (rule_type, physical_sign, threshold_min, threshold_max,"
    " trend_duration, severity_level, alert_message, customer_id) VALUES "
    + ",".join(
        f" ('heart_rate_high', 'heart_rate', 40, 95, 3, 'critical', 'High heart rate', {c}),"
        f" ('spo2_low', 'blood_oxygen', 94, NULL, 1, 'warning', 'Low blood oxygen', {c}),"
        f" ('fever', 'temperature', NULL, 37.2, 2, 'warning', 'Elevated body temperature', {c})"
        for c in SIMULATED_CUSTOMERS
    )
)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def committed_lag(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        lag = 0
        for tp in c.committed(tps, timeout=10):
            high = c.get_watermark_offsets(tp, timeout=10)[1]
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        c.close()


def start_gateway(topic: str, bootstrap: str, port: int) -> subprocess.Popen[bytes]:
    """`health-gateway` (2 workers) in front of the demo topic; waits for /readyz."""
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / "gateway.log", "ab")  # noqa: SIM115 - the child owns it
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_KAFKA_TOPIC": topic,
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
    }
    binary = str(Path(sys.executable).with_name("health-gateway"))
    proc = subprocess.Popen([binary], env=env, stdout=log, stderr=log)
    atexit.register(lambda: proc.poll() is None and proc.terminate())  # even on a crash
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError(f"gateway not ready; see {LOGS / 'gateway.log'}")


def main() -> int:
    settings = load_settings()
    url = settings.database_url.get_secret_value()
    print(f"migrating {url.rsplit('@', 1)[-1]} ...", flush=True)
    upgrade_to_head(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        # Rules are per customer: a database from an older demo may hold only customer-0 rules.
        first = SIMULATED_CUSTOMERS[0]
        count = "SELECT COUNT(*) FROM t_alert_rules WHERE customer_id = :c"
        if not conn.execute(text(count), {"c": first}).scalar():
            conn.execute(text(DEMO_RULES))
    admin = admin_client(settings.kafka_bootstrap_servers, settings.kafka_client)
    partitions = ensure_topic(admin, settings.kafka_topic, 12)

    def counts() -> dict[str, int]:
        with engine.connect() as conn:
            return {
                t: int(conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() or 0)
                for t in ("t_user_health_data", "t_user_health_data_daily", "t_alert_info")
            }

    before = counts()
    base_port = settings.http_port
    replicas = [
        ReplicaProcess({"LOG_LEVEL": "INFO"}, LOGS / f"consumer-{i}.log", base_port + i).start()
        for i in range(2)
    ]
    for r in replicas:
        r.wait_ready()
    print(f"2 replicas up: sidecars on http://127.0.0.1:{base_port} and :{base_port + 1}")

    seed = random.randrange(1000)
    start = dt.datetime.now().replace(microsecond=0) - dt.timedelta(hours=2)
    generator = ReadingGenerator(
        devices=int(env_float("DEMO_DEVICES", 500)),
        seed=seed,
        invalid_ratio=env_float("DEMO_INVALID_RATIO", 0.01),
        start=start,
    )
    gateway = None
    target_rate = env_float("DEMO_RATE", 2000)
    if os.environ.get("DEMO_DIRECT") == "1":
        summary = simulate(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topic=settings.kafka_topic,
            generator=generator,
            rate=target_rate,
            duration_s=env_float("DEMO_DURATION_S", 60),
            partitions=partitions,
            client_props=settings.kafka_client,
        )
    else:
        port = int(env_float("DEMO_GATEWAY_PORT", 8080))
        gateway = start_gateway(settings.kafka_topic, settings.kafka_bootstrap_servers, port)
        print(f"gateway up: POST http://127.0.0.1:{port}/upload_health_data")
        summary = simulate_via_gateway(
            url=f"http://127.0.0.1:{port}",
            generator=generator,
            rate=target_rate,
            duration_s=env_float("DEMO_DURATION_S", 60),
        )
    sent = summary.as_dict()
    print(
        "simulator:",
        json.dumps(
            {
                k: sent[k]
                for k in (
                    "sent_messages",
                    "sent_readings",
                    "invalid",
                    "rate_messages_per_s",
                    "http_status",
                )
                if k in sent
            }
        ),
    )

    deadline = time.monotonic() + 120
    lag = -1
    while time.monotonic() < deadline:
        lag = committed_lag(
            settings.kafka_bootstrap_servers,
            settings.kafka_group_id,
            settings.kafka_topic,
            partitions,
        )
        if lag == 0:
            break
        time.sleep(1)
    samples = [r.samples() for r in replicas]
    after = counts()
    p95 = histogram_quantile(samples, "health_consumer_end_to_end_latency_seconds", 0.95)
    status, health = replicas[0].get("/api/batch_processor/health")
    # Every upload sent (answered or not) over the sending window: what the demo offered.
    offered = sum(summary.http_status.values()) if summary.http_status else sent["sent_messages"]
    achieved = round(offered / summary.seconds, 1) if summary.seconds else 0.0
    result = {
        "target_rate_per_s": target_rate,
        "achieved_rate_per_s": achieved,
        "via": "direct to Kafka" if gateway is None else "the gateway (HTTP)",
        "produced_messages": sent["sent_messages"],
        "produced_readings": sent["sent_readings"],
        "invalid_messages_sent": sum(sent["invalid"].values()),
        "rows_in_db": after["t_user_health_data"] - before["t_user_health_data"],
        "daily_rows": after["t_user_health_data_daily"] - before["t_user_health_data_daily"],
        "duplicates": total(samples, "health_consumer_records_duplicate_total"),
        "dead_letters": total(samples, "health_consumer_dead_letters_total"),
        "alerts": after["t_alert_info"] - before["t_alert_info"],
        "remaining_lag": lag,
        "p95_end_to_end_latency_ms": None if p95 is None else round(p95 * 1000, 1),
        "sidecars": [r.url("/") for r in replicas],
        "health_endpoint_status": status,
        "gateway_http_status": sent.get("http_status"),
        "gateway_delivery_errors": sent["delivery_errors"],
    }
    print(json.dumps(result, indent=2))
    if status != 404:
        print("health:", health.decode()[:4000])
    if os.environ.get("DEMO_KEEP_RUNNING") == "1":
        print("replicas and gateway left running (DEMO_KEEP_RUNNING=1); stop with kill -TERM")
        return 0
    if gateway is not None:
        gateway.terminate()
        gateway.wait(60)
    codes = [r.stop() for r in replicas]
    print(f"replicas stopped with exit codes {codes}")
    expected = sent["sent_readings"] - sum(sent["invalid"].values())
    ok = (
        lag == 0
        and result["rows_in_db"] == expected
        and all(c == 0 for c in codes)
        and sent["delivery_errors"] == 0
    )
    print(
        f"rate: {achieved:,.0f} uploads/s achieved of {target_rate:,.0f}/s asked ({result['via']})"
    )
    print("demo OK" if ok else f"demo FAILED: expected {expected} rows")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
