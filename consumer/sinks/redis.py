"""Latest state per device in Redis, updated after the DB commit, one pipeline per batch.

The compare-and-set runs as a Lua script so a replay of older readings can never move a
device's latest state backwards, even with two replicas racing during a rebalance.
Redis is a cache: when it is down the sink backs off (a circuit breaker), counts what it
skipped and lets the DB path carry on. An error Redis answers for one key (WRONGTYPE on a
legacy `health_data:{sn}` that is not a hash, a script error) is no outage: that key is
skipped (counted, logged once per key), the others are updated, the breaker stays shut
and the alerts go out once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import redis
from redis.exceptions import NoScriptError, ResponseError

from consumer.health_alerts.rules import Alert
from consumer.pipeline.retry import Backoff
from consumer.sinks.base import ORDER_CACHE, Policy, SinkBase, SinkBatch, SinkContext, SinkResult
from consumer.sinks.redis_hash import latest_state_args
from schemas.record import HealthRecord

log = logging.getLogger(__name__)

LATEST_KEY = "health_data:{}"
DATA_CHANNEL = "health_data_channel:{}"  # the Lua script builds the same name
ALERT_CHANNEL = "health_alert_channel"

# KEYS: latest-state hashes. ARGV[2i-1]: reading timestamp of KEYS[i]; ARGV[2i]: JSON
# array [deviceSn, field, value, ...]. One call per batch: packing ~35 arguments per
# device through redis-py cost more CPU than the DB insert. "yyyy-MM-dd HH:mm:ss" strings
# order like the times they name, so a plain string comparison is the time comparison.
_CAS_LATEST = """
local updated = 0
for i, key in ipairs(KEYS) do
  local ts = ARGV[2 * i - 1]
  local current = redis.call('HGET', key, 'timestamp')
  if not current or current < ts then
    local fields = cjson.decode(ARGV[2 * i])
    local sn = table.remove(fields, 1)
    redis.call('HSET', key, unpack(fields))
    redis.call('PUBLISH', 'health_data_channel:' .. sn, sn)
    updated = updated + 1
  end
end
return updated
"""
DEVICES_PER_CALL = 500
# Bytes of latest-state arguments per call and per round trip: slow fields (workoutData)
# can be ~1 MB a device, so a flush's update is bounded in bytes, not only devices.
CALL_MAX_BYTES = 2 << 20
LOGGED_KEYS_MAX = 10_000  # keys whose error was logged; past that, only counted


@dataclass(slots=True)
class RedisResult:
    updated: int = 0
    stale: int = 0
    alerts_published: int = 0
    skipped: bool = False
    key_errors: int = 0  # devices whose key Redis refused (WRONGTYPE, script error)


class RedisSink(SinkBase):
    """Best effort: the offset never waits for a cache."""

    name = "redis"
    dependency = "redis"
    policy = Policy.BEST_EFFORT
    order = ORDER_CACHE

    def __init__(
        self,
        url: str,
        socket_timeout_s: float,
        retry_max_s: float,
        on_status: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            health_check_interval=30,
        )
        self._cas = self._client.register_script(_CAS_LATEST)
        self._retry_max_s = retry_max_s
        self._on_status = on_status or (lambda up, error: None)
        self._breaker = Backoff(initial_s=0.5, max_s=30.0)
        self._open_until = 0.0  # while now < this, Redis is known down: skip fast
        self._down = False  # once down, a probe gets one try, not the full retry budget
        self._logged_keys: set[str] = set()

    def write_batch(self, batch: SinkBatch) -> SinkResult:
        """The sink protocol: the readings the stores kept; the alerts stored first now
        (a replay publishes nothing twice)."""
        if not batch.records and not batch.new_alerts:
            return SinkResult()
        result = self.update(batch.records, batch.new_alerts)
        written = 0 if result.skipped else len(batch.records)
        return SinkResult(written=written, refused=result.key_errors, skipped=result.skipped)

    def health(self) -> tuple[bool, str | None]:
        up = self.ping()
        return up, None if up else "PING failed"

    def update(self, records: list[HealthRecord], alerts: list[Alert]) -> RedisResult:
        """Apply the newest reading of each device and publish alerts; never raises."""
        if time.monotonic() < self._open_until:
            return RedisResult(skipped=True)
        latest = newest_per_device(records)
        deadline = time.monotonic() + (0.0 if self._down else self._retry_max_s)
        retry = Backoff(initial_s=0.05, max_s=1.0)
        while True:
            try:
                result = self._apply(latest, alerts)
            except redis.RedisError as err:
                delay = retry.next_delay()
                if time.monotonic() + delay > deadline:
                    self._open_until = time.monotonic() + self._breaker.next_delay()
                    self._down = True
                    self._on_status(False, f"{type(err).__name__}: {err}")
                    log.warning("redis unavailable, skipping cache update: %s", err)
                    return RedisResult(skipped=True)
                time.sleep(delay)
                continue
            self._breaker.reset()
            self._down = False
            self._on_status(True, None)
            return result

    def _apply(self, latest: list[HealthRecord], alerts: list[Alert]) -> RedisResult:
        """One pipeline, one round trip: the scripts by hash, then the alert messages.

        Not redis-py's Script object: in a pipeline it asks SCRIPT EXISTS first, a second
        round trip on every flush. A server that lost the script (restarted, flushed) says
        NOSCRIPT: the script is loaded and only those calls are run again, so an alert
        already published is not published twice.
        """
        calls: list[tuple[list[str], list[str | bytes]]] = []
        keys: list[str] = []
        args: list[str | bytes] = []
        size = 0
        for record in latest:
            timestamp, fields = latest_state_args(record)
            if keys and (len(keys) >= DEVICES_PER_CALL or size + len(fields) > CALL_MAX_BYTES):
                calls.append((keys, args))
                keys, args, size = [], [], 0
            keys.append(LATEST_KEY.format(record.device_sn))
            args.append(timestamp)
            args.append(fields)
            size += len(fields)
        if keys:
            calls.append((keys, args))
        replies = []
        pipe = self._client.pipeline(transaction=False)
        pending = 0
        for keys, args in calls:
            pipe.evalsha(self._cas.sha, len(keys), *keys, *args)
            pending += sum(len(a) for a in args)
            if pending >= CALL_MAX_BYTES:  # one call's worth in the client's buffers at most
                replies += pipe.execute(raise_on_error=False)
                pipe, pending = self._client.pipeline(transaction=False), 0
        for alert in alerts:
            pipe.publish(ALERT_CHANNEL, alert_message(alert))
        replies += pipe.execute(raise_on_error=False)
        updated = errors = 0
        for (keys, args), reply in zip(calls, replies, strict=False):
            if isinstance(reply, NoScriptError):
                self._client.script_load(_CAS_LATEST)
                reply = self._client.evalsha(self._cas.sha, len(keys), *keys, *args)
            if isinstance(reply, ResponseError):
                done, failed = self._one_key_at_a_time(keys, args)
                updated, errors = updated + done, errors + failed
            elif isinstance(reply, Exception):
                raise reply
            else:
                updated += int(reply)
        for reply in replies[len(calls) :]:
            if isinstance(reply, Exception) and not isinstance(reply, ResponseError):
                raise reply
        return RedisResult(
            updated=updated,
            stale=len(latest) - updated - errors,
            alerts_published=len(alerts),
            key_errors=errors,
        )

    def _one_key_at_a_time(self, keys: list[str], args: list[str | bytes]) -> tuple[int, int]:
        """A call Redis refused: the script stopped at the first bad key, so every key of
        the call is applied alone (the compare-and-set makes the ones already applied a
        no-op); the bad ones are skipped. Returns (updated, refused)."""
        pipe = self._client.pipeline(transaction=False)
        for i, key in enumerate(keys):
            pipe.evalsha(self._cas.sha, 1, key, args[2 * i], args[2 * i + 1])
        updated = refused = 0
        for key, reply in zip(keys, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, ResponseError):
                refused += 1
                if key not in self._logged_keys and len(self._logged_keys) < LOGGED_KEYS_MAX:
                    self._logged_keys.add(key)
                    log.warning("redis refused the latest state of %s, skipped: %s", key, reply)
            elif isinstance(reply, Exception):
                raise reply
            else:
                updated += int(reply)
        return updated, refused

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.RedisError:
            return False

    def close(self, timeout_s: float = 0.0) -> None:
        self._client.close()


def newest_per_device(records: list[HealthRecord]) -> list[HealthRecord]:
    """Each device's newest reading; of two with the same time, the first (the one the
    health row keeps: issue 18, S3), as the compare-and-set keeps it across batches."""
    newest: dict[str, HealthRecord] = {}
    for record in records:
        current = newest.get(record.device_sn)
        if current is None or record.timestamp > current.timestamp:
            newest[record.device_sn] = record
    return list(newest.values())


def alert_message(alert: Alert) -> bytes:
    r = alert.record
    return orjson.dumps(
        {
            "rule_id": alert.rule.id,
            "alert_type": alert.rule.rule_type,
            "severity_level": alert.rule.severity_level,
            "device_sn": r.device_sn,
            "alert_timestamp": r.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
            "physical_sign": alert.rule.physical_sign,
            "field": alert.field,
            "value": str(alert.value),
            "alert_desc": alert.description,
            "customer_id": r.customer_id,
            "org_id": r.org_id,
            "user_id": r.user_id,
        }
    )


def build_sink(context: SinkContext) -> RedisSink:
    s = context.settings
    return RedisSink(
        s.redis_url.get_secret_value(),
        s.redis_socket_timeout_s,
        s.redis_retry_max_s,
        on_status=lambda up, err: context.dependencies.report("redis", up, err),
    )
