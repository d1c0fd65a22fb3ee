"""Delivers ops-alert transitions to ALERT_WEBHOOK_URL from a thread of its own.

A slow or dead webhook must never delay the monitor, so calls only enqueue; retries use the
pipeline's jittered `Backoff`, like every other retry loop in the replica.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import deque

from consumer.observe.ops_alerts import AlertEvent
from consumer.pipeline.retry import Backoff

log = logging.getLogger(__name__)


def webhook_body(event: AlertEvent) -> dict[str, object]:
    """The event as the API shows it, with the receiver's names: `alert` and `source`."""
    body = event.as_dict()
    return {"alert": body.pop("name"), **body, "source": "healthstream"}


class _Retryable(Exception):
    pass


class WebhookNotifier:
    """POSTs each AlertEvent as JSON to ALERT_WEBHOOK_URL from a background thread.

    ``__call__`` only enqueues, so ``AlertEngine.check`` never waits on the network. The queue
    is bounded and drops the oldest event when full: during a long webhook outage the newest
    state is what an operator needs. Connection errors, timeouts and 5xx are retried with
    exponential backoff (``retries`` extra attempts); 4xx is a configuration error and is not.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_queue: int = 1000,
    ) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("alert webhook URL must be http(s)")
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self._url = url
        self._timeout_s = timeout_s
        self._retries = max(0, retries)
        self._backoff_s = backoff_s
        self._max_backoff_s = max(backoff_s, 30.0)
        self._queue: deque[AlertEvent] = deque()
        self._max_queue = max_queue
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Events discarded because the queue was full (or still queued when close gave up)."""
        return self._dropped

    def __call__(self, event: AlertEvent) -> None:
        with self._cond:
            if self._closing:
                log.warning("alert webhook closed; event dropped", extra={"alert": event.name})
                self._dropped += 1
                return
            if len(self._queue) >= self._max_queue:
                old = self._queue.popleft()
                self._dropped += 1
                log.warning(
                    "alert webhook queue full; dropped oldest event",
                    extra={"alert": old.name, "state": old.state},
                )
            self._queue.append(event)
            self._cond.notify()

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued within ``timeout_s``, then abandon the rest."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abort.set()
            with self._cond:
                left = len(self._queue)
                self._dropped += left
                self._queue.clear()
            log.warning("alert webhook closed with undelivered events", extra={"pending": left})

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                event = self._queue.popleft()
            if self._abort.is_set():
                return
            self._deliver(event)

    def _deliver(self, event: AlertEvent) -> None:
        body = json.dumps(webhook_body(event)).encode()
        backoff = Backoff(self._backoff_s, self._max_backoff_s)
        for attempt in range(self._retries + 1):
            try:
                self._post(body)
                return
            except _Retryable as exc:
                if attempt == self._retries:
                    log.error(
                        "alert webhook delivery failed",
                        extra={"alert": event.name, "attempts": attempt + 1, "error": str(exc)},
                    )
                    return
            except urllib.error.HTTPError as exc:
                log.error(
                    "alert webhook rejected event",
                    extra={"alert": event.name, "status": exc.code},
                )
                return
            if self._abort.wait(backoff.next_delay()):
                return

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self._url,
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}") from exc
            raise
        except (urllib.error.URLError, OSError) as exc:
            raise _Retryable(str(exc)) from exc
