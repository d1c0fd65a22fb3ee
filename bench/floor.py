"""Consume-and-decode floor: a topic read by a plain confluent-kafka loop, nothing else.

What no replica can beat in one process: `consume()` batches from the start of the topic
(the replica's fetch settings) and, unless --no-decode, `schemas.decode.decode_message` on
each value, with no batching, DB, Redis, metrics or commits. The clock starts at the first
message (group join and connection set-up excluded) and stops at the last one.
Prints one JSON line: messages, readings, seconds, cpu_seconds (this process, all threads:
librdkafka's included), window start/end (wall clock, for the caller's broker CPU).

    .venv/bin/python bench/floor.py --topic T --messages N [--no-decode]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer  # noqa: E402

from schemas.decode import MessageError, decode_message  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--messages", type=int, required=True, help="stop after this many")
    parser.add_argument("--no-decode", action="store_true", help="consume only")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"bench-floor-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,  # as consumer.pipeline.poll_loop.consumer_config
        }
    )
    consumer.subscribe([args.topic])
    decode = not args.no_decode
    messages = readings = invalid = 0
    first_wall = first_cpu = 0.0
    deadline = time.monotonic() + args.timeout
    try:
        while messages < args.messages and time.monotonic() < deadline:
            batch = consumer.consume(1000, timeout=0.02)
            if not batch:
                continue
            if not messages:
                first_wall, first_cpu = time.time(), time.process_time()
            for m in batch:
                if m.error() is not None:
                    continue
                messages += 1
                if decode:
                    value = m.value()
                    try:
                        readings += len(decode_message(value).records) if value else 0
                    except MessageError:
                        invalid += 1
        last_wall, last_cpu = time.time(), time.process_time()
    finally:
        consumer.close()
    print(
        json.dumps(
            {
                "mode": "consume_only" if args.no_decode else "consume_decode",
                "messages": messages,
                "readings": readings if decode else None,
                "invalid_messages": invalid,
                "seconds": round(last_wall - first_wall, 4),
                "cpu_seconds": round(last_cpu - first_cpu, 4),
                "window": [first_wall, last_wall],
                "complete": messages >= args.messages,
            }
        )
    )
    return 0 if messages >= args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
