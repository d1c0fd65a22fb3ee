"""CPU per reading of each step of the replica's data path, one step at a time, one thread.

The drain scenarios measure what a replica costs in total; this says which step costs
what, without Kafka, threads or the GIL in the way: the benchmark's own uploads
(bench/workload.py, same seed) go through the consumer's real functions, one step over
all of them before the next, timed with this process's CPU clock (best of --rounds, the
least disturbed on a shared machine). The sum of the steps against a replica's measured
µs/reading is what threads, the GIL, librdkafka and the I/O cost on top.

Steps (batches of --batch records of one partition, as a worker flushes them):
- decode: schemas.decode.decode_message on each message value; decode_part_orjson_loads
  and decode_part_decimals: its JSON parse alone, and its Decimal conversions alone (the
  decoder's caches and converters on the six decimal texts of each reading)
- intake_extra: consumer.pipeline.intake.read_message minus decode (key check, PendingMessage)
- bind: consumer.pipeline.flush.Flusher._bind's work for readings without ids: the SNs that
  need a binding, then binding.bind_in_place (the ids are reset, untimed, before each round)
- render_sql: consumer.sinks.mysql_rows.render_health_values + the statement text (the
  INSERT path); render_tsv: render_health_tsv + its encoding (the LOAD DATA path)
- daily_weekly: consumer.sinks.mysql_rows.daily_rows + weekly_rows
- redis_prepare: consumer.sinks.redis.RedisSink._apply with the network calls stubbed
  (newest reading per device, the script arguments)
- redis_update: RedisSink.update against the real Redis (client side, incl. the socket)
- ledger: consumer.pipeline.ledger.Ledger.flushed per batch

    .venv/bin/python bench/stages.py [--messages 100000] [--rounds 3] [--batch 1000]
        [--steps decode,alt_decode] [--baseline-decoder FILE]
`--steps` times only the steps whose names start with one of the given prefixes;
`--baseline-decoder` adds decode_baseline, another commit's decode_message, interleaved with
today's decode in the same rounds (before/after on the same load):
    git show REV:schemas/decode.py > /tmp/decode_before.py
    .venv/bin/python bench/stages.py --steps decode --baseline-decoder /tmp/decode_before.py
Prints one JSON object (µs per reading per step); also bench/results/stages.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import watch_uploads  # noqa: E402
from consumer.pipeline.binding import UNBOUND, bind, bind_in_place, unbound_sns  # noqa: E402
from consumer.pipeline.intake import read_message  # noqa: E402
from consumer.pipeline.ledger import FlushReport, Ledger  # noqa: E402
from consumer.sinks.mysql import HEALTH_SQL_HEAD, HEALTH_SQL_TAIL  # noqa: E402
from consumer.sinks.mysql_rows import (  # noqa: E402
    daily_rows,
    render_health_tsv,
    render_health_values,
    weekly_rows,
)
from consumer.sinks.redis import RedisSink  # noqa: E402
from schemas import fast as d  # noqa: E402
from schemas.decode import decode_message  # noqa: E402
from schemas.publish import murmur2_partition  # noqa: E402
from schemas.record import HealthRecord  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DECIMAL_FIELDS = ("body_temperature", "distance", "calorie", "latitude", "longitude", "altitude")
DECIMAL_NAMES = ("temperature", "distance", "calorie", "latitude", "longitude", "altitude")
FIELD_NAMES = tuple(f.name for f in fields(HealthRecord))


def best_of(
    rounds: int,
    steps: dict[str, Callable[[], object]],
    setups: dict[str, Callable[[], object]] | None = None,
) -> dict[str, float]:
    """Least CPU seconds of each step over `rounds` rounds (after one untimed warm-up).

    Rounds are interleaved (every step once per round) so a burst of load from other
    users of the machine spoils one round of every step rather than every round of one.
    A step's setup (if any) runs untimed before each of its runs.
    """
    setups = setups or {}
    for name, step in steps.items():
        setups.get(name, lambda: None)()
        step()
    best = dict.fromkeys(steps, float("inf"))
    for i in range(rounds):
        for name, step in steps.items():
            setups.get(name, lambda: None)()
            t0 = time.process_time()
            step()
            best[name] = min(best[name], time.process_time() - t0)
        print(f"  round {i + 1}/{rounds} done", file=sys.stderr, flush=True)
    return best


class _FakePipe:
    def __init__(self) -> None:
        self.calls = 0

    def evalsha(self, *_: object) -> None:
        self.calls += 1

    def publish(self, *_: object) -> None:
        pass

    def execute(self, raise_on_error: bool = True) -> list[int]:
        return [0] * self.calls


class _FakeClient:
    def pipeline(self, transaction: bool = False) -> _FakePipe:
        return _FakePipe()


def load_decoder(path: Path) -> Callable[[bytes], object]:
    """decode_message of a decode.py file (e.g. the previous commit's), beside today's."""
    spec = importlib.util.spec_from_file_location("baseline_decode", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    decode: Callable[[bytes], object] = module.decode_message
    return decode


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--no-redis", action="store_true", help="skip the real Redis step")
    parser.add_argument(
        "--steps",
        default="",
        help="comma-separated step names or prefixes to time (default: all), e.g. decode",
    )
    parser.add_argument(
        "--baseline-decoder",
        metavar="FILE",
        help="a schemas/decode.py of another commit (git show REV:schemas/decode.py > FILE), "
        "timed as the step decode_baseline after checking it gives decode's records",
    )
    args = parser.parse_args()
    selected = [p for p in args.steps.split(",") if p]

    def wanted(*names: str) -> bool:
        return any(not selected or n.startswith(tuple(selected)) for n in names)

    uploads = list(watch_uploads(args.messages, seed=args.seed))
    values = [u.value for u in uploads]
    keys = [u.key for u in uploads]
    records = [r for v in values for r in decode_message(v).records]
    n = len(records)
    # As a replica's workers see them: per partition (the gateways' murmur2 on the SN, 12
    # partitions), in order, cut every --batch records. Per-device work (the Redis latest
    # state) depends on it: a partition holds a twelfth of the devices.
    by_partition: dict[int, list[HealthRecord]] = {}
    for r in records:
        by_partition.setdefault(murmur2_partition(r.device_sn.encode(), 12), []).append(r)
    batches = [
        part[i : i + args.batch]
        for part in by_partition.values()
        for i in range(0, len(part), args.batch)
    ]
    bound = [[bind(r, UNBOUND) for r in b] for b in batches]
    us: dict[str, float] = {}

    steps_to_time: dict[str, Callable[[], object]] = {}

    def per_reading(name: str, step: Callable[[], object]) -> None:
        if wanted(name):
            steps_to_time[name] = step

    def decode_all() -> None:
        for v in values:
            decode_message(v)

    def intake_all() -> None:
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            read_message(i, 0, k, v, 1000)

    unbound = [[dataclasses.replace(r) for r in b] for b in batches]  # bind_in_place's own

    def unbind_all() -> None:
        for batch in unbound:
            for r in batch:
                object.__setattr__(r, "customer_id", None)

    def bind_all() -> None:
        for batch in unbound:
            bind_in_place(batch, dict.fromkeys(unbound_sns(batch), UNBOUND))

    def render_all() -> None:
        for batch in bound:
            HEALTH_SQL_HEAD + render_health_values(batch) + HEALTH_SQL_TAIL

    def render_tsv_all() -> None:
        for batch in bound:
            render_health_tsv(batch).encode()

    def slow_rows_all() -> None:
        for batch in bound:
            daily_rows(batch)
            weekly_rows(batch)

    sink = RedisSink(REDIS_URL, 1.0, 2.0)
    fake = RedisSink(REDIS_URL, 1.0, 2.0)
    fake._client = _FakeClient()  # type: ignore[assignment]

    def redis_prepare_all() -> None:
        for batch in bound:
            fake.update(batch, [])

    def redis_update_all() -> None:
        for batch in bound:
            sink.update(batch, [])

    ledger = Ledger()

    def ledger_all() -> None:
        for batch in bound:
            report = FlushReport(0, len(batch), len(batch), inserted=len(batch))
            ledger.flushed(report, [1_700_000_000_000] * len(batch))

    per_reading("decode", decode_all)
    if args.baseline_decoder and wanted("decode_baseline"):
        baseline = load_decoder(Path(args.baseline_decoder))
        for v in values:  # same output first, so the saving is measured on the same work
            assert repr(baseline(v)) == repr(decode_message(v)), v

        def decode_baseline_all() -> None:  # as decode_all: keeping the results would
            for v in values:  # make the garbage collector walk them, timed to this step
                baseline(v)

        per_reading("decode_baseline", decode_baseline_all)
    # What decode is made of: the JSON parse alone, and the Decimal conversions alone (the
    # decoder's own caches and converters on each reading's six decimal texts).
    per_reading("decode_part_orjson_loads", lambda: [orjson.loads(v) for v in values])
    texts = [[r.get(f) for f in DECIMAL_FIELDS] for v in values for r in orjson.loads(v)["data"]]
    caches = [getattr(d, f"_{name.upper()}") for name in DECIMAL_NAMES]

    def decimals_all() -> None:
        for row in texts:
            for raw, cache in zip(row, caches, strict=True):
                cache[raw]

    per_reading("decode_part_decimals", decimals_all)
    per_reading("intake", intake_all)
    per_reading("bind", bind_all)
    per_reading("render_sql", render_all)
    per_reading("render_tsv", render_tsv_all)
    per_reading("daily_weekly", slow_rows_all)
    per_reading("redis_prepare", redis_prepare_all)
    if not args.no_redis:
        per_reading("redis_update", redis_update_all)
    per_reading("ledger", ledger_all)

    for name, seconds in best_of(args.rounds, steps_to_time, {"bind": unbind_all}).items():
        us[name] = round(seconds * 1e6 / n, 3)
    if "intake" in us and "decode" in us:
        us["intake_extra"] = round(us["intake"] - us["decode"], 3)
    redis = "redis_update" if "redis_update" in us else "redis_prepare"
    steps = ("decode", "intake_extra", "bind", "render_tsv", "daily_weekly", redis, "ledger")
    summed = all(s in us for s in steps)
    result = {
        "readings": n,
        "messages": len(values),
        "batch": args.batch,
        "rounds": args.rounds,
        "us_per_reading": us,
        "sum_of_steps_us": round(sum(us[s] for s in steps), 3) if summed else None,
        "steps_summed": steps if summed else (),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "command": "bench/stages.py " + " ".join(sys.argv[1:]),
    }
    out = ROOT / "bench" / "results" / "stages.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
