"""Gateway simulator: realistic readings, keyed by device SN, at a steady rate.

Generation is pure and seeded (`ReadingGenerator`), so the same seed yields the same
messages: tests replay a run to prove idempotency. Invalid messages carry a
`sim.invalid` header naming the reason code the consumer is expected to dead-letter.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message

from consumer.topics import admin_client, ensure_topic
from schemas.publish import make_producer

DEFAULT_START = dt.datetime(2025, 6, 1, 0, 0, 0)
INVALID_KINDS = (
    "invalid_json",
    "missing_device_sn",
    "invalid_timestamp",
    "schema_violation",
    "key_mismatch",
)
# Uplinks drawn with these weights (half wifi), from schemas.clean.UPLOAD_METHODS.
_UPLINK_DRAWS = ("wifi", "wifi", "wifi", "bluetooth", "4g", "common_event")
TS_FORMAT = "%Y-%m-%d %H:%M:%S"


# The simulator's devices belong to these customers (demo rules are created per customer).
SIMULATED_CUSTOMERS = tuple(range(1000, 1007))


@dataclass(frozen=True, slots=True)
class SimMessage:
    key: bytes
    value: bytes
    readings: int
    invalid: str | None = None


@dataclass(slots=True)
class Device:
    sn: str
    clock: dt.datetime
    base_hr: int
    lat: float
    lon: float
    customer_id: int
    org_id: int
    user_id: int
    steps: int = 0


@dataclass(slots=True)
class ReadingGenerator:
    devices: int
    seed: int = 0
    array_ratio: float = 0.1
    slow_field_ratio: float = 0.05
    invalid_ratio: float = 0.0
    start: dt.datetime = DEFAULT_START
    rng: random.Random = field(init=False)
    fleet: list[Device] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.fleet = [self._device(i) for i in range(self.devices)]

    def _device(self, i: int) -> Device:
        r = self.rng
        return Device(
            sn=f"CRFTQ{self.seed % 1000:03d}{i:08d}",
            clock=self.start + dt.timedelta(seconds=r.randint(0, 3600)),
            base_hr=r.randint(58, 82),
            lat=round(22.5 + r.uniform(-0.5, 0.5), 6),
            lon=round(114.0 + r.uniform(-0.5, 0.5), 6),
            customer_id=SIMULATED_CUSTOMERS[i % len(SIMULATED_CUSTOMERS)],
            org_id=2000 + i % 31,
            user_id=100_000 + i,
        )

    def messages(self) -> Iterator[SimMessage]:
        while True:
            yield self.next_message()

    def next_message(self) -> SimMessage:
        r = self.rng
        device = self.fleet[r.randrange(self.devices)]
        if self.invalid_ratio and r.random() < self.invalid_ratio:
            return self._invalid(device, INVALID_KINDS[r.randrange(len(INVALID_KINDS))])
        if r.random() < self.array_ratio:
            readings = [self._reading(device) for _ in range(r.randint(2, 20))]
            payload: dict[str, Any] = {"data": readings}
        else:
            reading = self._reading(device)
            style = r.random()
            if reading["upload_method"] == "bluetooth":
                payload = {"data": {"data": reading}}
            elif style < 0.7:
                payload = {"data": reading}
            else:
                payload = reading
        if r.random() < 0.5:  # gateways often lift the ids to the envelope
            for reading in payload["data"] if isinstance(payload.get("data"), list) else []:
                reading.pop("customerId", None)
            payload["customerId"] = device.customer_id
        n = len(payload["data"]) if isinstance(payload.get("data"), list) else 1
        return SimMessage(device.sn.encode(), orjson.dumps(payload), n)

    def _reading(self, d: Device) -> dict[str, Any]:
        r = self.rng
        d.clock += dt.timedelta(seconds=r.randint(5, 120))
        d.steps += r.randint(0, 40)
        measured = r.random() > 0.1
        reading: dict[str, Any] = {
            "deviceSn": d.sn,
            "heart_rate": max(35, int(r.gauss(d.base_hr, 6))) if measured else 0,
            "blood_oxygen": min(100, int(r.gauss(97, 1.2))) if measured else 0,
            "body_temperature": f"{r.gauss(36.5, 0.25):.1f}" if measured else "0.0",
            "blood_pressure_systolic": int(r.gauss(115, 8)),
            "blood_pressure_diastolic": int(r.gauss(75, 6)),
            "step": d.steps,
            "distance": f"{d.steps * 0.7:.1f}",
            "calorie": f"{d.steps * 0.04:.1f}",
            "stress": r.randint(10, 60),
            "latitude": f"{d.lat + r.uniform(-0.001, 0.001):.6f}",
            "longitude": f"{d.lon + r.uniform(-0.001, 0.001):.6f}",
            "altitude": f"{r.uniform(5, 60):.1f}",
            "upload_method": _UPLINK_DRAWS[r.randrange(len(_UPLINK_DRAWS))],
            "timestamp": d.clock.strftime(TS_FORMAT),
            "customerId": d.customer_id,
            "orgId": d.org_id,
            "userId": d.user_id,
        }
        if r.random() < 0.2:  # legacy short aliases from older firmware
            reading["xlv"] = reading.pop("heart_rate")
            reading["xy"] = reading.pop("blood_oxygen")
            reading["cjsj"] = reading.pop("timestamp")
        if r.random() < self.slow_field_ratio:
            reading.update(self._slow_fields(d))
        return reading

    def _slow_fields(self, d: Device) -> dict[str, str]:
        r = self.rng
        end_ms = int(d.clock.replace(tzinfo=dt.UTC).timestamp() * 1000) - 3_600_000
        start_ms = end_ms - r.randint(4, 9) * 3_600_000
        sleep = {
            "code": 0,
            "data": [{"endTimeStamp": end_ms, "startTimeStamp": start_ms, "type": 2}],
            "name": "sleep",
            "type": "history",
        }
        daily = {"code": 0, "data": [{"steps": d.steps, "calorie": round(d.steps * 0.04, 1)}]}
        week = {"code": 0, "data": [{"day": i, "steps": r.randint(2000, 12000)} for i in range(7)]}
        out = {
            "sleepData": orjson.dumps(sleep).decode(),
            "exerciseDailyData": orjson.dumps(daily).decode(),
        }
        if r.random() < 0.5:
            out["exerciseWeekData"] = orjson.dumps(week).decode()
        if r.random() < 0.3:
            out["workoutData"] = "null"
        return out

    def _invalid(self, d: Device, kind: str) -> SimMessage:
        reading = self._reading(d)
        key = d.sn.encode()
        if kind == "invalid_json":
            value = orjson.dumps({"data": reading})[:-7]
        elif kind == "missing_device_sn":
            del reading["deviceSn"]
            value = orjson.dumps({"data": reading})
        elif kind == "invalid_timestamp":
            reading.pop("cjsj", None)
            reading["timestamp"] = "2025-13-45 99:00:00"
            value = orjson.dumps({"data": reading})
        elif kind == "schema_violation":
            reading.pop("xlv", None)
            reading["heart_rate"] = "fast"
            value = orjson.dumps({"data": reading})
        else:  # key_mismatch
            key = b"NOT-" + key
            value = orjson.dumps({"data": reading})
        return SimMessage(key, value, 1, invalid=kind)


@dataclass(slots=True)
class SimSummary:
    sent_messages: int = 0
    sent_readings: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    per_partition: Counter[int] = field(default_factory=Counter)
    delivery_errors: int = 0
    seconds: float = 0.0
    http_status: Counter[int] = field(default_factory=Counter)  # --via-gateway only

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent_messages": self.sent_messages,
            "sent_readings": self.sent_readings,
            "valid_readings": self.sent_readings - sum(self.invalid.values()),
            "invalid": dict(self.invalid),
            "per_partition": {str(k): v for k, v in sorted(self.per_partition.items())},
            "delivery_errors": self.delivery_errors,
            "seconds": round(self.seconds, 3),
            "rate_messages_per_s": round(self.sent_messages / self.seconds, 1)
            if self.seconds
            else 0.0,
            **({"http_status": dict(self.http_status)} if self.http_status else {}),
        }


def simulate(
    *,
    bootstrap_servers: str,
    topic: str,
    generator: ReadingGenerator,
    rate: float,
    duration_s: float | None,
    max_messages: int | None = None,
    partitions: int = 12,
    progress: bool = True,
    client_props: dict[str, str] | None = None,
) -> SimSummary:
    """Publish until `duration_s` or `max_messages`; rate <= 0 means as fast as possible."""
    ensure_topic(admin_client(bootstrap_servers, client_props), topic, partitions)
    producer = make_producer(bootstrap_servers, **(client_props or {}))
    summary = SimSummary()

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            summary.delivery_errors += 1
        else:
            summary.per_partition[msg.partition() or 0] += 1

    started = time.monotonic()
    next_progress = started + 1.0
    for i, message in enumerate(generator.messages()):
        now = time.monotonic()
        elapsed = now - started
        if (duration_s is not None and elapsed >= duration_s) or (
            max_messages is not None and i >= max_messages
        ):
            break
        if rate > 0 and i > rate * elapsed:
            time.sleep(min(0.05, (i - rate * elapsed) / rate))
        headers: list[tuple[str, str | bytes | None]] | None = (
            [("sim.invalid", message.invalid.encode())] if message.invalid else None
        )
        while True:
            try:
                producer.produce(
                    topic,
                    key=message.key,
                    value=message.value,
                    headers=headers,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        summary.sent_messages += 1
        summary.sent_readings += message.readings
        if message.invalid:
            summary.invalid[message.invalid] += 1
        if progress and now >= next_progress:
            next_progress = now + (1.0 if sys.stderr.isatty() else 10.0)
            _progress(summary, elapsed, duration_s)
    remaining = producer.flush(60)
    summary.delivery_errors += remaining
    summary.seconds = time.monotonic() - started
    if progress:
        _progress(summary, summary.seconds, duration_s)
        if sys.stderr.isatty():
            sys.stderr.write("\n")
    return summary


def _progress(summary: SimSummary, elapsed: float, duration_s: float | None) -> None:
    width = 30
    frac = min(1.0, elapsed / duration_s) if duration_s else 0.0
    bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
    rate = summary.sent_messages / elapsed if elapsed > 0 else 0.0
    line = (
        f"[{bar}] {elapsed:6.1f}s sent={summary.sent_messages} "
        f"readings={summary.sent_readings} rate={rate:,.0f} msg/s"
    )
    # Redraw in place on a terminal; one line per update in a log file.
    sys.stderr.write("\r" + line if sys.stderr.isatty() else line + "\n")
    sys.stderr.flush()


# What the gateway refuses with a 400 (never reaches Kafka); a key mismatch cannot happen
# over HTTP, since the gateway keys each reading by its own SN.
GATEWAY_REFUSES = frozenset({"invalid_json", "missing_device_sn"})


def simulate_via_gateway(
    *,
    url: str,
    generator: ReadingGenerator,
    rate: float,
    duration_s: float | None,
    max_messages: int | None = None,
    progress: bool = True,
    connections: int = 64,
) -> SimSummary:
    """Like `simulate`, but each message is POSTed to the ingest gateway at `url` as a watch
    would; sent_* count the uploads answered 200, http_status every answer."""
    from gateway.client import Sent, post_uploads

    summary = SimSummary()
    kinds: dict[int, SimMessage] = {}

    def bodies() -> Iterator[bytes]:
        for i, message in enumerate(generator.messages()):
            if max_messages is not None and i >= max_messages:
                return
            kinds[i] = message
            yield message.value

    started = time.monotonic()
    next_progress = started + 1.0
    window = [float("inf"), 0.0]  # first upload's due time, last answer (time.time())

    def on_sent(sent: Sent) -> None:
        nonlocal next_progress
        window[0] = min(window[0], sent.due)
        window[1] = max(window[1], sent.answered)
        message = kinds.pop(sent.index)
        summary.http_status[sent.status] += 1
        invalid = None if message.invalid == "key_mismatch" else message.invalid
        if sent.status == 200:
            summary.sent_messages += 1
            summary.sent_readings += message.readings
            if invalid:
                summary.invalid[invalid] += 1
        elif not (sent.status == 400 and invalid in GATEWAY_REFUSES):
            summary.delivery_errors += 1
        if progress and time.monotonic() >= next_progress:
            next_progress = time.monotonic() + (1.0 if sys.stderr.isatty() else 10.0)
            _progress(summary, time.monotonic() - started, duration_s)

    post_uploads(
        url,
        bodies(),
        rate=rate,
        duration_s=duration_s,
        connections=connections,
        on_sent=on_sent,
    )
    # The rate is over the uploads' own window (first due -> last answer), not the
    # connection set-up before it: a client or gateway that falls behind still shows.
    summary.seconds = window[1] - window[0] if window[1] else time.monotonic() - started
    if progress:
        _progress(summary, summary.seconds, duration_s)
        if sys.stderr.isatty():
            sys.stderr.write("\n")
    return summary
