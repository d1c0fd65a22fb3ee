"""`health-consumer run | migrate | simulate | dlq | retention`."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import TYPE_CHECKING

from common import logs
from consumer import __version__
from consumer.settings import ConfigError, Settings, load_settings
from consumer.tools import dlq as dlq_tool

if TYPE_CHECKING:
    from consumer.tools.simulate import SimSummary

log = logging.getLogger("consumer")
# Third-party chatter stays at WARNING unless we debug.
QUIET_LOGGERS = ("alembic", "sqlalchemy", "urllib3")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="health-consumer", description="healthstream: wearable telemetry from Kafka to MySQL"
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run one replica of the consumer group (env configures it)")
    mig = sub.add_parser(
        "migrate",
        help="apply the Alembic migrations to DATABASE_URL; adopt a legacy ljwx database",
    )
    mig.add_argument(
        "--dry-run", action="store_true", help="print the SQL it would run; change nothing"
    )
    mig.add_argument(
        "--tune-indexes",
        action="store_true",
        help="instead: drop an adopted legacy table's redundant per-device indexes, online "
        "(consumer/db/tune.py says which and what the bigscreen loses)",
    )
    ret = sub.add_parser(
        "retention",
        help="remove raw readings older than --keep-days online, in bounded chunks; "
        "daily/weekly rows and alerts stay",
    )
    ret.add_argument("--keep-days", type=float, required=True)
    ret.add_argument("--dry-run", action="store_true", help="say what it would do; change nothing")
    ret.add_argument("--chunk-rows", type=int, default=5000, help="ids per DELETE")
    ret.add_argument("--pause-ms", type=float, default=0.0, help="sleep between DELETEs")
    ret.add_argument(
        "--partition-minutes",
        type=int,
        default=None,
        help="length of new time partitions (default: PARTITION_MINUTES, or 60 when it is 0)",
    )
    ret.add_argument(
        "--ahead-hours", type=float, default=24.0, help="create partitions this far ahead"
    )
    ret.add_argument(
        "--exact",
        action="store_true",
        help="partitioned table: also delete, in chunks, the older readings of the partition "
        "that straddles the cutoff (costs the writers; by default it goes a partition later)",
    )
    sim = sub.add_parser("simulate", help="publish realistic readings like gateways do")
    sim.add_argument("--devices", type=int, default=100)
    sim.add_argument("--rate", type=float, default=1000.0, help="messages/s; 0 = unlimited")
    sim.add_argument("--duration", type=float, default=None, help="seconds to run")
    sim.add_argument("--messages", type=int, default=None, help="stop after this many messages")
    sim.add_argument("--partitions", type=int, default=12, help="when creating the topic")
    sim.add_argument("--array-ratio", type=float, default=0.1)
    sim.add_argument("--slow-field-ratio", type=float, default=0.05)
    sim.add_argument("--invalid-ratio", type=float, default=0.0)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--topic", default=None, help="default: KAFKA_TOPIC")
    sim.add_argument("--start", default=None, help="first reading time, yyyy-MM-dd HH:mm:ss")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.add_argument("--summary-json", default=None, help="also write the summary here")
    dlq_tool.add_parser(sub)
    sim.add_argument(
        "--via-gateway",
        default=None,
        metavar="URL",
        help="POST the uploads to this health-gateway (e.g. http://127.0.0.1:8080) instead "
        "of producing to Kafka; token from HEALTH_GATEWAY_TOKEN",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"health-consumer: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format, quiet=QUIET_LOGGERS)

    if args.command == "migrate" and args.tune_indexes:
        return _tune(settings.database_url.get_secret_value(), args.dry_run)

    if args.command == "retention":
        return _retention(settings, args)

    if args.command == "migrate":
        return _migrate(settings.database_url.get_secret_value(), args.dry_run)

    if args.command == "dlq":
        return dlq_tool.run(settings, args)

    if args.command == "run":
        from consumer.db.migrate import SchemaNotReady
        from consumer.memory import limit_malloc_arenas
        from consumer.pipeline.poll_loop import KafkaFatal, WorkerFailed
        from consumer.service import run

        limit_malloc_arenas()  # before any thread starts
        try:
            run(settings)
        except (SchemaNotReady, ConfigError) as exc:  # waiting cannot fix these
            print(f"health-consumer: {exc}", file=sys.stderr)
            return 2
        except WorkerFailed as exc:  # already logged with partition and offsets
            print(f"health-consumer: stopped on an unexpected fault: {exc}", file=sys.stderr)
            return 3
        except KafkaFatal as exc:  # the consumer cannot continue; a restart rejoins
            print(f"health-consumer: fatal Kafka error: {exc}", file=sys.stderr)
            return 4
        return 0

    from consumer.tools.simulate import DEFAULT_START, ReadingGenerator, simulate

    if args.duration is None and args.messages is None:
        print("health-consumer simulate: give --duration or --messages", file=sys.stderr)
        return 2
    start = dt.datetime.strptime(args.start, "%Y-%m-%d %H:%M:%S") if args.start else DEFAULT_START
    generator = ReadingGenerator(
        devices=args.devices,
        seed=args.seed,
        array_ratio=args.array_ratio,
        slow_field_ratio=args.slow_field_ratio,
        invalid_ratio=args.invalid_ratio,
        start=start,
    )
    if args.via_gateway:
        from consumer.tools.simulate import simulate_via_gateway

        summary = simulate_via_gateway(
            url=args.via_gateway,
            generator=generator,
            rate=args.rate,
            duration_s=args.duration,
            max_messages=args.messages,
            progress=not args.quiet,
        )
        return _report(summary, args.summary_json)
    summary = simulate(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=args.topic or settings.kafka_topic,
        generator=generator,
        rate=args.rate,
        duration_s=args.duration,
        max_messages=args.messages,
        partitions=args.partitions,
        progress=not args.quiet,
        client_props=settings.kafka_client,
    )
    return _report(summary, args.summary_json)


def _report(summary: SimSummary, path: str | None) -> int:
    text = json.dumps(summary.as_dict(), indent=2)
    print(text)
    if path:
        with open(path, "w") as fh:
            fh.write(text + "\n")
    return 0 if summary.delivery_errors == 0 else 1


def _migrate(database_url: str, dry_run: bool) -> int:
    from sqlalchemy.exc import DBAPIError

    from consumer.db.adopt import AdoptionError, AdoptionRefused
    from consumer.db.migrate import SchemaNotReady, migrate
    from consumer.startup import describe_db_error

    try:
        result = migrate(database_url, dry_run=dry_run, log=lambda line: log.info("%s", line))
    except SchemaNotReady as exc:
        print(f"health-consumer: {exc}", file=sys.stderr)
        return 2
    except AdoptionRefused as exc:
        print("health-consumer: adoption refused; nothing was changed:", file=sys.stderr)
        for reason in exc.reasons:
            print(f"  - {reason}", file=sys.stderr)
        return 2
    except AdoptionError as exc:  # stopped midway: resumable, the message says how
        print(f"health-consumer: {exc}", file=sys.stderr)
        return 2
    except DBAPIError as exc:  # server down, unknown database, access denied: one line
        print(f"health-consumer: DATABASE_URL: {describe_db_error(exc)}", file=sys.stderr)
        return 2
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if dry_run:
        print(result.sql or "-- nothing to do")
        print(f"-- dry run ({result.kind}): nothing was changed", file=sys.stderr)
        for reason in result.refused:
            print(f"refused: {reason}", file=sys.stderr)
        return 2 if result.refused else 0
    if result.kind == "adopt":
        moved = ", ".join(f"{t}: {n}" for t, n in result.moved.items()) or "none"
        print(f"adopted the legacy tables; duplicate rows moved to <table>_dup: {moved}")
    elif result.kind == "up to date":
        print("nothing to do")
    print(f"database at revision {result.revision}")
    return 0


def _tune(database_url: str, dry_run: bool) -> int:
    from consumer.db.tune import tune_indexes

    result = tune_indexes(database_url, dry_run=dry_run)
    for name, why in result.kept.items():
        print(f"note: {name} kept: {why}", file=sys.stderr)
    print(result.sql or "-- nothing to do: no redundant per-device index")
    if dry_run:
        print("-- dry run: nothing was changed", file=sys.stderr)
    elif result.dropped:
        print(f"dropped {', '.join(result.dropped)}")
    return 0


def _retention(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.db.partitions import local_now
    from consumer.tools.retention import retention

    # The stored times are naive, in DEVICE_TIMEZONE: so is the cutoff (and the keeper's clock).
    now = local_now(settings.device_timezone)
    result = retention(
        settings.database_url.get_secret_value(),
        args.keep_days,
        dry_run=args.dry_run,
        now=now,
        chunk_rows=args.chunk_rows,
        pause_ms=args.pause_ms,
        partition_minutes=args.partition_minutes or settings.partition_minutes or 60,
        ahead_hours=args.ahead_hours,
        exact=args.exact,
    )
    for statement in result.statements:
        print(statement + ";")
    verb = "would" if args.dry_run else "did"
    print(
        f"cutoff {result.cutoff:%Y-%m-%d %H:%M:%S}: {verb} drop "
        f"{len(result.dropped_partitions)} partitions (~{result.dropped_rows_estimate} rows) "
        f"and delete {result.deleted_rows} readings in {result.chunks} chunks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
