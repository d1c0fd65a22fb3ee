"""Reload the alert rules when an operator changes them, not only every refresh interval.

The legacy admin side publishes `update:{customer_id}:{version}` on the Redis channel
`alert_rules_channel` after editing `t_alert_rules`. This thread listens and marks the
rule cache stale, so the next flush reloads. Redis is a cache here too: while it is down
the thread reconnects with backoff, and reloads once more when it is back, because a
change published meanwhile was missed.
"""

from __future__ import annotations

import logging
import threading

import redis

from consumer.health_alerts.repository import RuleCache
from consumer.pipeline.retry import Backoff

log = logging.getLogger(__name__)

RULES_CHANNEL = "alert_rules_channel"


class RuleReloader:
    def __init__(
        self,
        redis_url: str,
        socket_timeout_s: float,
        rules: RuleCache,
        channel: str = RULES_CHANNEL,
    ) -> None:
        self._client = redis.Redis.from_url(
            redis_url, socket_timeout=None, socket_connect_timeout=socket_timeout_s
        )
        self._rules = rules
        self._channel = channel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rule-reloader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        self._client.close()

    def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        connected_before = False
        while not self._stop.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                if connected_before:  # a change may have been published while we were away
                    self._reload("resubscribed")
                connected_before = True
                backoff.reset()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        data = message.get("data")
                        text = data.decode(errors="replace") if isinstance(data, bytes) else data
                        self._reload(str(text)[:200])
            except redis.RedisError as exc:
                delay = backoff.next_delay()
                if backoff.attempt == 1:
                    log.warning("rule reload channel unavailable, retrying: %s", exc)
                self._stop.wait(delay)
            finally:
                pubsub.close()

    def _reload(self, why: str) -> None:
        self._rules.invalidate()
        log.info("alert rules marked for reload", extra={"reason": why})
