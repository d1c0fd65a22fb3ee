"""Every replica keeps the health table's time partitions ahead of the readings (issue 20).

Migration 0005 partitions `t_user_health_data` by reading time so that only the current
partition's device-leading indexes take inserts (consumer.db.partitions). A reading whose
time has no partition lands in `p_future`, which then grows like the unpartitioned table
did: the collapse of docs/capacity.md comes back, and the next split has to copy every
row of it. `health-consumer retention` splits ahead too, but a deployment that forgets to
schedule it would lose what 0005 bought without a sign; so the consumer does it itself.

At start and then every `interval_s`, one replica at a time (a per-database GET_LOCK;
the others skip that round) splits `p_future` into PARTITION_MINUTES partitions up to
FUTURE_TIMESTAMP_HORIZON_S plus one interval and one partition ahead of now in
DEVICE_TIMEZONE (the clock of the stored times): every reading the consumer accepts then
finds its partition, and `p_future` stays empty, so the split copies nothing. The DDL
waits at most LOCK_WAIT_S for the flushes' metadata locks (an ALTER queued behind a long
transaction would stall every insert queued behind it), and the keeper never splits a
`p_future` holding more than `max_copy_rows` rows: that copy blocks writes, it belongs
in a maintenance window (`retention`), and the keeper says so instead.

Dropping old partitions stays with `health-consumer retention --keep-days N`: deleting
data is an operator's decision. An unpartitioned (adopted legacy) table: nothing to do.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from consumer.db import partitions
from consumer.db.partitions import FUTURE, TABLE
from consumer.settings import PARTITION_KEEPER_INTERVAL_S

log = logging.getLogger(__name__)

LOCK_NAME = "LEFT(CONCAT('healthstream_partitions.', DATABASE()), 64)"
LOCK_WAIT_S = 5
MAX_COPY_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class KeepResult:
    """One round: whether it ran, the split it made, and how far partitions reach."""

    partitioned: bool | None  # None: the round failed (problem says why)
    split: str | None = None
    ahead_until: dt.datetime | None = None  # the last time partition's bound
    problem: str | None = None


def horizon(
    now: dt.datetime, future_horizon_s: float, interval_s: float, minutes: int
) -> dt.datetime:
    """The `until` of a split: its last bound is the last partition boundary up to it, so
    the partitions cover the decoder's future horizon and one round past now, and no
    reading the consumer accepts before the next round lands in `p_future`."""
    return now + dt.timedelta(seconds=future_horizon_s + interval_s, minutes=minutes)


class PartitionKeeper:
    def __init__(
        self,
        engine: Engine,
        minutes: int,
        future_horizon_s: float,
        zone: str,
        interval_s: float = PARTITION_KEEPER_INTERVAL_S,
        max_copy_rows: int = MAX_COPY_ROWS,
    ) -> None:
        self._engine = engine
        self._minutes = minutes
        self._future_horizon_s = future_horizon_s
        self._zone = zone
        self._interval_s = interval_s
        self._max_copy_rows = max_copy_rows
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="partition-keeper", daemon=True)
        self.last: KeepResult | None = None

    def start(self) -> None:
        """A first round now, before consuming: readings flushed before the first split
        would land in `p_future`; then one every interval, in the background (none for
        a table that is not partitioned)."""
        if self._round():
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=LOCK_WAIT_S + 2)
        self._engine.dispose()

    def ahead_seconds(self) -> float | None:
        """Seconds from now (DEVICE_TIMEZONE) to the last time partition's bound, as of
        the last round that saw the table: 0 when it has none yet (every reading lands in
        `p_future`), None before a round or when the table is not partitioned."""
        last = self.last
        if last is None or not last.partitioned:
            return None
        if last.ahead_until is None:
            return 0.0
        return (last.ahead_until - self._now()).total_seconds()

    def run_once(self) -> KeepResult:
        """One round, recorded and logged; without the lock (another replica splits) it
        only looks. Raises what the database raised (the background rounds record it)."""
        with self._engine.connect() as conn:
            if not conn.exec_driver_sql(f"SELECT GET_LOCK({LOCK_NAME}, 0)").scalar():
                return self._record(self._look(partitions.partitions(conn)))
            try:
                return self._record(self._keep(conn))
            finally:
                conn.exec_driver_sql(f"SELECT RELEASE_LOCK({LOCK_NAME})")

    def _keep(self, conn: Connection) -> KeepResult:
        existing = partitions.partitions(conn)
        now = self._now()
        until = horizon(now, self._future_horizon_s, self._interval_s, self._minutes)
        sql = partitions.split_future_sql(existing, now, until, self._minutes)
        if sql is None:
            return self._look(existing)
        if _rows_in_future(conn, self._max_copy_rows + 1) > self._max_copy_rows:
            return self._look(
                existing,
                f"{FUTURE} holds over {self._max_copy_rows} readings: splitting it copies "
                "them and blocks writes meanwhile; run `health-consumer retention` in a "
                "maintenance window (docs/capacity.md)",
            )
        conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_S}")
        conn.exec_driver_sql(sql)
        return self._look(partitions.partitions(conn), split=sql)

    @staticmethod
    def _look(
        existing: list[partitions.Partition],
        problem: str | None = None,
        split: str | None = None,
    ) -> KeepResult:
        bounds = [p.bound for p in existing if p.bound is not None]
        return KeepResult(bool(existing), split, bounds[-1] if bounds else None, problem)

    def _now(self) -> dt.datetime:
        return partitions.local_now(self._zone)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            if not self._round():
                return  # the table is no longer partitioned (0005 downgraded)

    def _round(self) -> bool:
        """One round that never raises; False when the table is not partitioned."""
        try:
            result = self.run_once()
        except Exception as exc:  # the DB is down or the DDL waited too long: next round
            result = self._record(
                KeepResult(partitioned=None, problem=f"{type(exc).__name__}: {exc}")
            )
        return result.partitioned is not False

    def _record(self, result: KeepResult) -> KeepResult:
        previous, self.last = self.last, result
        if result.partitioned is None and previous is not None:
            self.last = KeepResult(  # a failed round keeps what the last good one saw
                previous.partitioned, None, previous.ahead_until, result.problem
            )
        if result.split is not None:
            log.info(
                "time partitions split ahead",
                extra={"until": str(result.ahead_until), "minutes": self._minutes},
            )
        if result.problem is not None and (previous is None or previous.problem != result.problem):
            log.warning("time partitions not kept ahead: %s", result.problem[:500])
        return result


def _rows_in_future(conn: Connection, limit: int) -> int:
    """The rows in `p_future`, counted up to `limit`."""
    return int(
        conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM (SELECT 1 FROM {TABLE} PARTITION ({FUTURE}) LIMIT {limit}) t"
        ).scalar_one()
    )
