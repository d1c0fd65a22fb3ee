"""What the benchmark sends: legacy-shaped watch uploads, and how it puts them on a topic.

`watch_uploads` is the shape production sees from the watches (the byte layout of
tests/unit/payloads.py SAMPLE_UPLOAD): `{"data": [reading, ...]}` keyed by the device SN,
no customer/org/user ids (the consumer binds them), vitals as ints, temperature/distance/
calorie/GPS as "%.1f"/"%.6f" text, GPS mostly "0" when there is no fix. By default 20% of
the messages are cache flushes of 5 readings, the rest carry one reading (1.8 readings per
message). Seeded: the same arguments give the same bytes, so a ceiling run (plain decode
loop, bulk insert) sees exactly the rows a scenario wrote.

`demo_uploads` is the simulator's mix that `make demo` sends (envelope variants, aliases,
ids, slow fields, 1% invalid messages).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer

from bench.bench_decode import reading as watch_reading
from consumer.tools.simulate import ReadingGenerator
from schemas.decode import MessageError, decode_message

TS_FORMAT = "%Y-%m-%d %H:%M:%S"
START = dt.datetime(2025, 6, 1, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Upload:
    key: bytes
    value: bytes
    # (device_sn, "yyyy-MM-dd HH:mm:ss") of each reading the consumer should store
    readings: tuple[tuple[str, str], ...]


def watch_uploads(
    messages: int,
    *,
    seed: int,
    devices: int = 2000,
    array_ratio: float = 0.2,
    array_size: int = 5,
) -> Iterator[Upload]:
    """`messages` watch uploads over `devices` devices, each device's clock moving forward."""
    rng = random.Random(seed)
    sns = [f"CRFTQ{seed % 100:02d}{i:09d}" for i in range(devices)]
    clocks = [START + dt.timedelta(seconds=rng.randrange(3600)) for _ in range(devices)]
    for _ in range(messages):
        d = rng.randrange(devices)
        size = array_size if rng.random() < array_ratio else 1
        data = []
        keys = []
        for _ in range(size):
            clocks[d] += dt.timedelta(seconds=rng.randint(5, 120))
            r = watch_reading(rng, sns[d], clocks[d])
            data.append(r)
            keys.append((sns[d], r["timestamp"]))
        yield Upload(sns[d].encode(), orjson.dumps({"data": data}), tuple(keys))


def demo_uploads(messages: int, *, seed: int, devices: int = 500) -> Iterator[Upload]:
    """The demo's simulator mix (`scripts/demo.py`: 500 devices, 1% invalid)."""
    gen = ReadingGenerator(devices=devices, seed=seed, invalid_ratio=0.01)
    for _ in range(messages):
        m = gen.next_message()
        keys: tuple[tuple[str, str], ...] = ()
        if m.invalid is None:
            try:
                decoded = decode_message(m.value)
                keys = tuple(
                    (r.device_sn, r.timestamp.strftime(TS_FORMAT)) for r in decoded.records
                )
            except MessageError:
                keys = ()
        yield Upload(m.key, m.value, keys)


def make_producer(bootstrap: str, bulk: bool, **extra: object) -> Producer:
    """The gateways' partitioner (murmur2 on the key). `bulk`: big lz4 batches for prefill;
    otherwise a short linger, as our gateway under live load."""
    conf: dict[str, object] = {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"}
    if bulk:
        conf.update({"linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4"})
    else:
        conf.update({"linger.ms": 5})  # the gateway's default LINGER_MS
    conf.update(extra)
    return Producer(conf)


class LastOffsets:
    """Delivery callback: the offset of the last message delivered to each partition, so a
    caller knows which committed offsets mean "all consumed" (transaction markers occupy
    offsets too, so the high watermark does not tell)."""

    def __init__(self) -> None:
        self.last: dict[int, int] = {}
        self.errors = 0

    def __call__(self, err: object, msg: Any) -> None:
        if err is not None:
            self.errors += 1
            return
        p, o = msg.partition(), msg.offset()
        if o > self.last.get(p, -1):
            self.last[p] = o


class Prefill:
    """A topic filled inside one Kafka transaction that stays open until `commit()`.

    Replicas read with librdkafka's default isolation.level=read_committed, so they see
    nothing of it until the commit: they can start, join and sit idle, and the drain
    window opens at the commit with the whole backlog visible at once. Start-up is then
    outside the measured CPU, and no rows are written before the window starts.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.offsets = LastOffsets()
        self.producer = make_producer(
            bootstrap,
            bulk=True,
            **{"transactional.id": f"bench-{topic}", "transaction.timeout.ms": 900_000},
        )
        self.producer.init_transactions(30)
        self.producer.begin_transaction()
        self.messages = self.readings = 0

    def produce(self, uploads: Iterable[Upload]) -> None:
        producer, topic, on_delivery = self.producer, self.topic, self.offsets
        for u in uploads:
            while True:
                try:
                    producer.produce(topic, key=u.key, value=u.value, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
            self.messages += 1
            self.readings += len(u.readings)
        if producer.flush(300) != 0 or self.offsets.errors:
            raise RuntimeError(f"prefill: {self.offsets.errors} messages not delivered")

    def commit(self) -> float:
        """Make the backlog visible; returns the wall time just before the commit."""
        started = time.time()
        self.producer.commit_transaction(60)
        return started


def paced(
    bootstrap: str,
    topic: str,
    uploads: list[Upload],
    rate: float,
    per: Callable[[Upload], int],
    duration_s: float,
) -> tuple[list[float], float, float, LastOffsets]:
    """Produce at `rate` units/s (`per` counts an upload's units: readings or 1 message)
    for `duration_s`; returns (send time of each upload sent, start, end, last offsets),
    wall clock.

    Open loop: each upload is due at units_so_far / rate; a late producer catches up
    rather than shifting the schedule, so a slow consumer cannot slow the load down.
    """
    producer = make_producer(bootstrap, bulk=False)
    offsets = LastOffsets()
    sent: list[float] = []
    units = 0
    start_mono = time.monotonic()
    start = time.time()
    for u in uploads:
        due = units / rate
        elapsed = time.monotonic() - start_mono
        if due >= duration_s:
            break
        if due - elapsed > 0.001:  # ahead of schedule: wait (sub-ms gaps are not worth it)
            time.sleep(due - elapsed)
        sent.append(time.time())
        producer.produce(topic, key=u.key, value=u.value, on_delivery=offsets)
        producer.poll(0)
        units += per(u)
    end = time.time()
    if producer.flush(60) != 0 or offsets.errors:
        raise RuntimeError(f"paced producer: {offsets.errors} messages not delivered")
    return sent, start, end, offsets
