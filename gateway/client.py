"""An open-loop HTTP load generator for the upload endpoint (simulator and benchmark).

Open loop: upload i is due at start + i/rate whatever happened to the earlier ones, and
its latency is measured from that due time, so a slow gateway cannot hide its queueing
by slowing the sender down (coordinated omission). Many keep-alive connections carry
the uploads concurrently, as a fleet of watches would; an upload due while every
connection is busy waits in a backlog (its latency keeps counting from its due time).

Why not aiohttp: its client's CPU per request kept `make demo` (simulator, gateway, two
replicas, Kafka and MariaDB on 2 cores) below its 2,000 uploads/s (issue 19). Here each
connection is an asyncio protocol with httptools' response parser and no task, future or
coroutine per request, several times cheaper (docs/performance.md, "Figures behind the
design notes").
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

TOKEN_ENV = "HEALTH_GATEWAY_TOKEN"  # sent as X-Api-Token when set
UPLOAD_PATH = "/upload_health_data"


@dataclass(frozen=True, slots=True)
class Sent:
    index: int
    status: int  # 0 = no HTTP answer (connection error, timeout)
    due: float  # time.time() the upload was due
    answered: float  # time.time() the answer arrived

    @property
    def latency_s(self) -> float:
        return self.answered - self.due


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one upload at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.current: tuple[int, float] | None = None  # (index, due) of the upload in flight
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, index: int, body: bytes, due: float) -> None:
        assert self.transport is not None
        self.current = (index, due)
        self.sent_at = time.monotonic()
        self.transport.write(self.pool.head % len(body) + body)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_message_complete(self) -> None:
        current, self.current = self.current, None
        keep = self.parser.should_keep_alive()
        if current is not None:
            self.pool.answered(self if keep else None, *current, self.parser.get_status_code())
        if not keep:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        current, self.current = self.current, None
        self.pool.lost(self)
        if current is not None:
            self.pool.answered(None, *current, 0)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """Up to `size` connections; uploads go to an idle one or wait in the backlog."""

    def __init__(
        self, url: str, size: int, on_sent: Callable[[Sent], None], timeout_s: float
    ) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        token = os.environ.get(TOKEN_ENV)
        auth = f"X-Api-Token: {token}\r\n" if token else ""
        self.head = (
            f"POST {UPLOAD_PATH} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\n{auth}Content-Length: %d\r\n\r\n"
        ).encode()
        self.size = size
        self.on_sent = on_sent
        self.timeout_s = timeout_s
        self.idle: list[_Connection] = []
        self.all: set[_Connection] = set()
        self.connecting = 0
        self.backlog: collections.deque[tuple[int, bytes, float]] = collections.deque()
        self.in_flight = 0
        self.changed = asyncio.Event()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.connecting += 1
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError:
            self.connecting -= 1
            while self.backlog and not self.all and not self.connecting:
                index, _, due = self.backlog.popleft()  # nobody can carry them
                self.answered(None, index, due, 0)
            return
        self.connecting -= 1
        self.all.add(conn)
        self._ready(conn)

    def _ready(self, conn: _Connection) -> None:
        if self.backlog:
            conn.send(*self.backlog.popleft())
        else:
            self.idle.append(conn)
            self.changed.set()

    def submit(self, index: int, body: bytes, due: float) -> None:
        self.in_flight += 1
        if self.idle:
            self.idle.pop().send(index, body, due)
            return
        self.backlog.append((index, body, due))
        if len(self.all) + self.connecting < self.size:
            asyncio.get_running_loop().create_task(self.connect())

    def answered(self, conn: _Connection | None, index: int, due: float, status: int) -> None:
        self.in_flight -= 1
        self.on_sent(Sent(index, status, due, time.time()))
        if conn is not None:
            self._ready(conn)
        self.changed.set()

    def lost(self, conn: _Connection) -> None:
        self.all.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if self.backlog and len(self.all) + self.connecting < self.size:
            asyncio.get_running_loop().create_task(self.connect())

    def expire(self) -> None:
        """Close connections whose upload waited past the timeout (answered as status 0)."""
        limit = time.monotonic() - self.timeout_s
        for conn in [c for c in self.all if c.current is not None and c.sent_at < limit]:
            conn.close()

    async def wait(self) -> None:
        self.changed.clear()
        try:
            await asyncio.wait_for(self.changed.wait(), 1.0)
        except TimeoutError:
            self.expire()


async def _post_all(
    url: str,
    bodies: Iterator[bytes],
    rate: float,
    duration_s: float | None,
    connections: int,
    on_sent: Callable[[Sent], None],
    timeout_s: float,
) -> None:
    pool = _Pool(url, connections, on_sent, timeout_s)
    await asyncio.gather(*(pool.connect() for _ in range(connections)))
    started_mono = time.monotonic()
    started_wall = time.time()
    next_expiry = started_mono + 1.0
    for index, body in enumerate(bodies):
        offset = index / rate if rate > 0 else 0.0
        now = time.monotonic()
        if now >= next_expiry:
            pool.expire()
            next_expiry = now + 1.0
        if duration_s is not None and (offset >= duration_s or now - started_mono >= duration_s):
            break
        delay = started_mono + offset - now
        if delay > 0.002:  # sleep in steps of >= 2 ms; what is due by then goes out together
            await asyncio.sleep(delay)
        if rate <= 0:  # as fast as the connections allow: wait for an idle one
            while not pool.idle:
                await pool.wait()
        # Sent up to 2 ms early (sleep steps): then latency counts from the actual send.
        due = min(started_wall + offset, time.time()) if rate > 0 else time.time()
        pool.submit(index, body, due)
    while pool.in_flight:
        await pool.wait()
    for conn in list(pool.all):
        conn.close()


def post_uploads(
    url: str,
    bodies: Iterator[bytes],
    *,
    rate: float,
    duration_s: float | None,
    connections: int = 64,
    on_sent: Callable[[Sent], None],
    timeout_s: float = 30.0,
) -> None:
    """POST each body to `url`/upload_health_data at `rate` uploads/s (0 = as fast as the
    connections allow) until `bodies` or `duration_s` runs out; `on_sent` sees each answer."""
    try:
        import uvloop

        runner: Callable[..., None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    runner(_post_all(url, bodies, rate, duration_s, connections, on_sent, timeout_s))
