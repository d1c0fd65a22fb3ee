"""The chaos workload: every message planned up front, with what the pipeline must make of it.

Invariants are only as good as their expectations, so nothing here is inferred from the
consumer's output: each message carries the readings it must store, the dead-letter
reason it must get (or none) and the alerts it must fire. The same seed plans the same
messages, so a failing run can be replayed byte for byte.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message

from consumer.tools.simulate import Device, ReadingGenerator
from schemas.publish import make_producer

# Alert rules the harness installs: (rule_type, physical_sign, threshold_max). With
# trend_duration 1 and every violation preceded by an in-bounds measurement of the same
# sign, a rule fires for exactly the violating readings, whatever state a replica lost.
ALERT_RULES: tuple[tuple[str, str, int], ...] = (
    ("chaos_hr_high", "heart_rate", 150),
    ("chaos_fever", "temperature", 39),
)
HR_RULE, TEMP_RULE = 0, 1
# A trend rule (issue 17, B11): SpO2 under 90 for 3 readings in a row fires once per run,
# at its third reading, for the devices of TREND_CUSTOMER only. Their runs span batches,
# kills and restarts, so a replica that forgot a run (or rebuilt it wrong) fires late,
# twice or never. Its index in the rule list comes after ALERT_RULES'.
TREND_RULE = ("chaos_spo2_run", "blood_oxygen", 90, 3)  # type, sign, threshold_min, readings
TREND_RULE_INDEX = len(ALERT_RULES)
TREND_CUSTOMER = 2000
TREND_DEVICES = 8

# Poison kinds and the dead-letter reason each must get. The crafted ones (F1-F4) are
# inputs that crashed decoders; until the decoder names them, any reason in the set
# counts as right: the invariant is that they are dead-lettered, not what they are called.
# A missing timestamp is no poison any more (issue 8): the reading is stored at the Kafka
# message time, so the harness produces it with an explicit one.
POISON: dict[str, frozenset[str]] = {
    "invalid_json": frozenset({"invalid_json"}),
    "wrong_type": frozenset({"schema_violation"}),
    "missing_sn": frozenset({"missing_device_sn"}),
    "missing_timestamp": frozenset(),
    "key_mismatch": frozenset({"key_mismatch"}),
    "non_utf8_value": frozenset({"invalid_json"}),
    "non_utf8_key": frozenset({"key_mismatch"}),
}
_DEEP = frozenset({"schema_violation", "invalid_json"})
_SLOW = frozenset({"invalid_slow_field"})
CRAFTED: dict[str, frozenset[str]] = {
    "f1_deep_slow_raw": _SLOW,
    "f1_deep_slow_string": _SLOW,
    "f2_deep_scalar": _DEEP | {"invalid_timestamp", "missing_device_sn"},
    "f3_customer_digits": frozenset({"schema_violation"}),
    "f3_sleep_digits": _SLOW,
    "f4_sleep_huge": _SLOW,
}
# Since issue 8 an unusable slow field costs only itself: these kinds keep their reading
# (without the field) and are dead-lettered once as invalid_slow_field.
KEEPS_READING = frozenset(
    {
        "missing_timestamp",
        "f1_deep_slow_raw",
        "f1_deep_slow_string",
        "f3_sleep_digits",
        "f4_sleep_huge",
    }
)
# F5: valid readings whose SN / upload method hold '%': stored byte-exact, never poison.
F5_SNS = ("SN%s", "A%sB%s", "AB%(x)s", "P100%", "Q%%d%n", "R%%5")
F5_METHODS = ("100%", "a%sb%s", "ab%(x)s", "%s", "wifi", "50%%")
# Nested deeper than MariaDB's JSON depth limit (32): the decoder accepts it, the JSON
# column's CHECK (json_valid) rejects it with 4025: a row error (RowRejected).
DB_REJECT_DEPTH = 40
TS_KEYS = ("timestamp", "cjsj")
HR_KEYS = ("heart_rate", "xlv")


@dataclass(slots=True)
class Planned:
    """One message and everything the pipeline must do with it."""

    key: bytes
    value: bytes
    kind: str
    readings: list[tuple[str, str]]  # (deviceSn, timestamp) the DB must hold
    reasons: frozenset[str] = frozenset()  # acceptable dead-letter reasons; empty: none
    alerts: list[tuple[str, int, str]] = field(default_factory=list)  # (sn, rule, ts)
    partition: int = -1
    offset: int = -1
    produced_at: float = 0.0  # monotonic time of the delivery report
    error: str | None = None
    timestamp_ms: int | None = None  # explicit Kafka timestamp (None: the producer's clock)

    def record(self) -> dict[str, Any]:
        """The JSONL line written to produced.jsonl."""
        return {
            "p": self.partition,
            "o": self.offset,
            "key": self.key.decode("utf-8", "backslashreplace"),
            "kind": self.kind,
            "readings": self.readings,
            "dlq": sorted(self.reasons) or None,
            "alerts": self.alerts,
            "kafka_ts": self.timestamp_ms,
        }


@dataclass(slots=True)
class WorkloadSpec:
    seed: int
    devices: int
    readings: int
    crafted: bool = True
    poison_ratio: float = 0.01
    db_reject_ratio: float = 0.002
    f5_ratio: float = 0.003
    partial_ratio: float = 0.003
    alert_ratio: float = 0.02
    # Genuine duplicates (issue 16): a retrying watch sends an upload again, soon (mostly
    # into the same batch) or late (another batch); a cache flush repeats a reading.
    retry_ratio: float = 0.03
    repeat_ratio: float = 0.005
    trend_ratio: float = 0.04  # messages of the trend devices (one reading each)


def _readings_of(payload: Any) -> list[dict[str, Any]]:
    """The reading dicts of any envelope the simulator emits (shared, so edits stick)."""
    data = payload.get("data", payload) if isinstance(payload, dict) else payload
    if isinstance(data, dict) and "data" in data and "deviceSn" not in data:
        data = data["data"]
    return data if isinstance(data, list) else [data]


def _get(reading: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in reading:
            return reading[k]
    return None


def _nested(depth: int) -> str:
    """JSON text of a list nested `depth` deep (encoders refuse to build these)."""
    return "[" * depth + "0" + "]" * depth


DEEP_MARK = "\x00chaos-deep\x00"


class WorkloadBuilder:
    """Plans messages from the project's simulator plus the harness's own bad inputs."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.gen = ReadingGenerator(devices=spec.devices, seed=spec.seed)
        self.rng = random.Random(spec.seed * 7919 + 17)
        self.f5_devices = [self._f5_device(i, sn) for i, sn in enumerate(F5_SNS)]
        # (sn, rule) -> the last measured value of the rule's sign was a violation
        self.violating: dict[tuple[str, int], bool] = {}
        self.kinds = list(POISON) + (list(CRAFTED) if spec.crafted else [])
        # Trend devices: (sn, its clock, its current run of low SpO2 readings).
        self.trend: list[list[Any]] = [
            [f"TRENDDEV{i:04d}", dt.datetime(2025, 6, 1, 6, 0, 0), 0] for i in range(TREND_DEVICES)
        ]

    def _f5_device(self, i: int, sn: str) -> Device:
        device = self.gen._device(self.spec.devices + i)
        device.sn = sn
        return device

    def build(self) -> list[Planned]:
        spec, rng = self.spec, self.rng
        out: list[Planned] = []
        retries: list[tuple[int, Planned]] = []  # (due at len(out), copy), kept sorted
        total = 0
        while total < spec.readings:
            while retries and retries[0][0] <= len(out):
                copy = retries.pop(0)[1]
                out.append(copy)
                total += len(copy.readings)
            r = rng.random()
            edges = (spec.poison_ratio, spec.db_reject_ratio, spec.partial_ratio)
            if r < edges[0]:
                planned = self._poison(self.kinds[rng.randrange(len(self.kinds))])
            elif r < sum(edges[:2]):
                planned = self._db_rejected()
            elif r < sum(edges):
                planned = self._partial()
            elif spec.crafted and r < sum(edges) + spec.f5_ratio:
                planned = self._f5()
            elif r < sum(edges) + spec.f5_ratio + spec.repeat_ratio:
                planned = self._repeated()
            elif r < sum(edges) + spec.f5_ratio + spec.repeat_ratio + spec.trend_ratio:
                planned = self._trend()
            else:
                planned = self._valid()
            out.append(planned)
            total += len(planned.readings)
            if planned.kind == "valid" and not planned.alerts and rng.random() < spec.retry_ratio:
                delay = rng.randint(0, 20) if rng.random() < 0.5 else rng.randint(200, 2000)
                retries.append((len(out) + delay, self._retry(planned)))
                retries.sort(key=lambda due: due[0])
        return out

    def _retry(self, planned: Planned) -> Planned:
        """The same upload again, byte for byte: every reading in it is a duplicate.

        Only uploads that fire no alert are retried: a replayed violation could end or
        start a rule's run of violations out of order, which a retry never changes in
        what the harness expects of the alerts.
        """
        return Planned(planned.key, planned.value, "retry_duplicate", list(planned.readings))

    def _repeated(self) -> Planned:
        """A cache flush that holds one reading twice (and nothing that fires an alert)."""
        device = self._device()
        reading = self.gen._reading(device)
        for k in HR_KEYS:
            reading.pop(k, None)
        reading["heart_rate"] = self.rng.randint(60, 90)
        reading.pop("body_temperature", None)
        self._track_in_bounds(reading)
        sn, ts = reading["deviceSn"], _get(reading, TS_KEYS)
        return Planned(
            key=sn.encode(),
            value=orjson.dumps({"data": [reading, dict(reading)]}),
            kind="repeated_in_message",
            readings=[(sn, ts), (sn, ts)],
        )

    def _trend(self) -> Planned:
        """The next reading of a trend device: low SpO2 (85) about half the time, so runs
        of 1, 2, 3 and more readings happen; the third of a run is the one alert."""
        device = self.trend[self.rng.randrange(len(self.trend))]
        sn, clock, run = device
        clock = clock + dt.timedelta(seconds=self.rng.randint(20, 90))
        low = self.rng.random() < 0.55
        run = run + 1 if low else 0
        device[1], device[2] = clock, run
        ts = f"{clock:%Y-%m-%d %H:%M:%S}"
        reading = {
            "deviceSn": sn,
            "heart_rate": 72,
            "blood_oxygen": 85 if low else 97,
            "timestamp": ts,
            "customerId": TREND_CUSTOMER,
        }
        alerts = [(sn, TREND_RULE_INDEX, ts)] if run == TREND_RULE[3] else []
        return Planned(
            sn.encode(), orjson.dumps({"data": reading}), "trend", [(sn, ts)], alerts=alerts
        )

    def _track_in_bounds(self, reading: dict[str, Any]) -> None:
        """Record an in-bounds measurement (it ends a device's run of violations)."""
        sn = reading["deviceSn"]
        self.violating[(sn, HR_RULE)] = False
        if reading.get("body_temperature"):
            self.violating[(sn, TEMP_RULE)] = False

    # --- valid readings ---------------------------------------------------------------

    def _device(self) -> Device:
        return self.gen.fleet[self.rng.randrange(len(self.gen.fleet))]

    def _valid(self) -> Planned:
        message = self.gen.next_message()
        payload = orjson.loads(message.value)
        readings = _readings_of(payload)
        alerts = [a for reading in readings for a in self._track(reading)]
        return Planned(
            key=message.key,
            value=orjson.dumps(payload),
            kind="valid",
            readings=[(r["deviceSn"], _get(r, TS_KEYS)) for r in readings],
            alerts=alerts,
        )

    def _f5(self) -> Planned:
        device = self.f5_devices[self.rng.randrange(len(self.f5_devices))]
        reading = self.gen._reading(device)
        reading["upload_method"] = F5_METHODS[self.rng.randrange(len(F5_METHODS))]
        alerts = self._track(reading)
        return Planned(
            key=device.sn.encode(),
            value=orjson.dumps({"data": reading}),
            kind="f5_percent",
            readings=[(device.sn, _get(reading, TS_KEYS))],
            alerts=alerts,
        )

    def _partial(self) -> Planned:
        """A cache flush with one bad reading: the others are stored, the message dead-lettered."""
        device = self._device()
        readings = [self.gen._reading(device) for _ in range(self.rng.randint(3, 6))]
        bad = self.rng.randrange(len(readings))
        for k in HR_KEYS:
            readings[bad].pop(k, None)
        readings[bad]["heart_rate"] = "fast"
        good = [r for i, r in enumerate(readings) if i != bad]
        alerts = [a for r in good for a in self._track(r)]
        return Planned(
            key=device.sn.encode(),
            value=orjson.dumps({"data": readings}),
            kind="partial",
            readings=[(r["deviceSn"], _get(r, TS_KEYS)) for r in good],
            reasons=frozenset({"schema_violation"}),
            alerts=alerts,
        )

    def _track(self, reading: dict[str, Any]) -> list[tuple[str, int, str]]:
        """Maybe turn a valid reading into a rule violation; return the alerts it fires.

        A violation is only injected when the device's previous measurement of that sign
        was in bounds, so the alert never depends on trend state a killed replica lost.
        """
        sn, ts = reading["deviceSn"], _get(reading, TS_KEYS)
        if self.rng.random() < self.spec.alert_ratio:
            rule = self.rng.randrange(len(ALERT_RULES))
            if not self.violating.get((sn, rule), False):
                if rule == HR_RULE:
                    for k in HR_KEYS:
                        reading.pop(k, None)
                    reading["heart_rate"] = self.rng.randint(160, 220)
                else:
                    reading["body_temperature"] = f"{self.rng.uniform(39.5, 41.5):.1f}"
        fired: list[tuple[str, int, str]] = []
        hr = _get(reading, HR_KEYS)
        temp = float(reading.get("body_temperature") or 0)
        for rule, value in ((HR_RULE, hr or 0), (TEMP_RULE, temp)):
            if not value:  # 0: not measured, neither violates nor ends a run
                continue
            bad = value > ALERT_RULES[rule][2]
            if bad and not self.violating.get((sn, rule), False):
                fired.append((sn, rule, ts))
            elif bad:
                raise AssertionError(f"harness bug: back-to-back violations for {sn}")
            self.violating[(sn, rule)] = bad
        return fired

    # --- bad messages -----------------------------------------------------------------

    def _db_rejected(self) -> Planned:
        device = self._device()
        reading = self.gen._reading(device)
        reading["workoutData"] = _nested(DB_REJECT_DEPTH)
        return Planned(
            key=device.sn.encode(),
            value=orjson.dumps({"data": reading}),
            kind="db_rejected",
            readings=[],
            reasons=frozenset({"db_rejected"}),
        )

    def _poison(self, kind: str) -> Planned:
        rng = self.rng
        device = self._device()
        reading = self.gen._reading(device)
        key = device.sn.encode()
        value: bytes | None = None
        deep = ""  # raw JSON spliced in where DEEP_MARK stands
        sn, ts = reading["deviceSn"], _get(reading, TS_KEYS)
        timestamp_ms = None
        if kind == "invalid_json":
            value = orjson.dumps({"data": reading})[: -rng.randint(2, 12)]
        elif kind == "wrong_type":
            for k in HR_KEYS:
                reading.pop(k, None)
            reading[rng.choice(["heart_rate", "step", "blood_oxygen"])] = rng.choice(
                ["fast", [1], {"v": 1}, True]
            )
        elif kind == "missing_sn":
            del reading["deviceSn"]
        elif kind == "missing_timestamp":
            for k in TS_KEYS:
                reading.pop(k, None)
            # The Kafka time is the reading's own (DEVICE_TIMEZONE is UTC in the chaos
            # stack), so the stored row keeps the device's order and can be predicted.
            naive = dt.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S")
            timestamp_ms = int(naive.replace(tzinfo=dt.UTC).timestamp() * 1000)
        elif kind == "key_mismatch":
            key = b"NOT-" + key
        elif kind == "non_utf8_value":
            # The SN inside the JSON string gets two bytes that are not UTF-8.
            value = orjson.dumps({"data": reading}).replace(key, b"\xff\xfe" + key, 1)
        elif kind == "non_utf8_key":
            key = b"\xff\xfe" + key
        elif kind in ("f1_deep_slow_raw", "f1_deep_slow_string"):
            text = _nested(rng.randint(300, 1000))
            fld = rng.choice(["workoutData", "sleepData"])
            if kind.endswith("raw"):
                reading[fld], deep = DEEP_MARK, text
            else:
                reading[fld] = text
        elif kind == "f2_deep_scalar":
            fld = rng.choice(["heart_rate", "timestamp", "deviceSn", "customerId", "upload_method"])
            for k in (*HR_KEYS, *TS_KEYS) if fld in ("heart_rate", "timestamp") else ():
                reading.pop(k, None)
            reading[fld], deep = DEEP_MARK, _nested(rng.randint(989, 1000))
        elif kind == "f3_customer_digits":
            reading["customerId"] = "7" * 5000
        elif kind == "f3_sleep_digits":
            sleep = {"data": [{"startTimeStamp": 0, "endTimeStamp": "9" * 5000}]}
            reading["sleepData"] = orjson.dumps(sleep).decode() if rng.random() < 0.5 else sleep
        elif kind == "f4_sleep_huge":
            huge = "1000000000000000000000000000000000"
            reading["sleepData"] = {"data": [{"startTimeStamp": 0, "endTimeStamp": huge}]}
        else:
            raise ValueError(f"unknown poison kind {kind}")
        if value is None:
            value = orjson.dumps({"data": reading})
            if deep:
                value = value.replace(orjson.dumps(DEEP_MARK), deep.encode())
        kept = kind in KEEPS_READING
        return Planned(
            key=key,
            value=value,
            kind=kind,
            readings=[(sn, ts)] if kept else [],
            reasons=POISON[kind] if kind in POISON else CRAFTED[kind],
            alerts=self._track_kept(reading) if kept else [],
            timestamp_ms=timestamp_ms,
        )

    def _track_kept(self, reading: dict[str, Any]) -> list[tuple[str, int, str]]:
        """A kept poison reading is measured like any other: its in-bounds values end a
        device's run of violations (it never injects one)."""
        saved = self.spec.alert_ratio
        self.spec.alert_ratio = 0.0
        try:
            return self._track(reading)
        finally:
            self.spec.alert_ratio = saved


class Producer:
    """Publishes the planned messages at a steady rate, keyed by SN (murmur2), in order.

    Idempotent with a long delivery timeout, so a broker restart delays messages but
    neither loses nor reorders them; each delivery report fills in partition and offset.
    """

    def __init__(self, bootstrap: str, topic: str, planned: list[Planned]) -> None:
        self.topic = topic
        self.planned = planned
        self.sent = 0
        self.delivered = 0
        self.failed = 0
        self.done = threading.Event()
        self._producer = make_producer(
            bootstrap,
            **{
                "message.timeout.ms": 600_000,
                "queue.buffering.max.messages": 200_000,
                "log_level": 0,  # broker restarts are planned; delivery reports carry errors
            },
        )
        self._stop = threading.Event()

    def _on_delivery(self, index: int, err: KafkaError | None, msg: Message) -> None:
        planned = self.planned[index]
        if err is not None:
            planned.error = str(err)
            self.failed += 1
            return
        planned.partition = msg.partition() or 0
        planned.offset = msg.offset() or 0
        planned.produced_at = time.monotonic()
        self.delivered += 1

    def run(self, duration_s: float) -> None:
        """Spread every message over `duration_s`, then wait for all delivery reports."""
        rate = len(self.planned) / max(duration_s, 1.0)
        started = time.monotonic()
        producer = self._producer  # close() may drop the attribute while this runs
        try:
            for i, planned in enumerate(self.planned):
                if self._stop.is_set():
                    break
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(min(ahead, 0.5))
                callback: Callable[[KafkaError | None, Message], None] = functools.partial(
                    self._on_delivery, i
                )
                while True:
                    try:
                        producer.produce(
                            self.topic,
                            key=planned.key,
                            value=planned.value,
                            headers=[("chaos.kind", planned.kind.encode())],
                            on_delivery=callback,
                            timestamp=planned.timestamp_ms or 0,  # 0: the producer's clock
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
                self.sent += 1
            while producer.flush(1.0) and not self._stop.is_set():
                pass
        finally:
            self.done.set()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Drop the client: once the stack is down it would only retry and log."""
        self._stop.set()
        self._producer = None  # type: ignore[assignment]
