"""The gateway's HTTP/1.1 server: an asyncio protocol on uvloop, parsed by httptools.

Why not an ASGI server: per upload, uvicorn (or granian) plus the ASGI calling convention
cost the whole CPU budget of issue 19 for a fixed answer alone; this protocol costs a
fraction of it (the figures are in docs/performance.md). It speaks only what the
gateway needs and leaves the parsing - the hard part - to httptools (llhttp, node's
parser): request line, headers, Content-Length and chunked bodies, HTTP/1.0 and keep-alive.

What it guarantees:
- every answer has a Content-Length (never chunked), so HTTP/1.0 clients can read it;
- answers go out in request order on a connection (HTTP/1.1 pipelining), even when a
  later upload is acknowledged by Kafka before an earlier one;
- a body over the limit is read and discarded, then answered 413 (the connection stays
  usable); a malformed request is answered 400 and the connection closed;
- an idle keep-alive connection is closed after `keepalive_s`, a request that does not
  arrive whole within `request_timeout_s` is closed (slow clients cannot hold a slot);
- `shutdown()` stops accepting, lets in-flight requests finish, then returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http
import socket
from collections.abc import Callable
from typing import Protocol, cast

import httptools

SERVER_HEADER = b""  # no Server header: nothing to fingerprint
MAX_PIPELINED = 64  # answers owed on one connection before we stop reading it
MAX_HEAD_BYTES = 65_536  # request line + headers; more is a malformed request (400)
LINGER_S = 2.0  # after a closing answer: how long the client may take to close its side
_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus
}


class Answer:
    """A complete HTTP answer, rendered once: constant answers cost one write."""

    __slots__ = ("_close", "_keep", "body", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"application/json",
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        head = _STATUS_LINES[status] + b"content-type: %s\r\ncontent-length: %d\r\n" % (
            content_type,
            len(body),
        )
        for name, value in headers:
            head += name + b": " + value + b"\r\n"
        self._keep = head + b"\r\n" + body
        self._close = head + b"connection: close\r\n\r\n" + body

    def wire(self, close: bool, head_only: bool = False) -> bytes:
        data = self._close if close else self._keep
        return data[: len(data) - len(self.body)] if head_only else data


class Request:
    """What a handler sees of one request."""

    __slots__ = ("body", "headers", "method", "oversize", "path")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        oversize: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers  # names lower-cased, in arrival order
        self.body = body
        self.oversize = oversize  # the body passed the limit; it was discarded

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Reply:
    """The place of one answer in its connection's order; `send` fills it, once."""

    __slots__ = ("_conn", "close", "head_only", "wire")

    def __init__(self, conn: HttpConnection, close: bool, head_only: bool) -> None:
        self._conn = conn
        self.close = close
        self.head_only = head_only
        self.wire: bytes | None = None

    def send(self, answer: Answer) -> None:
        if self.wire is not None:
            return
        self.close = self.close or self._conn.server.draining
        self.wire = answer.wire(self.close, self.head_only)
        self._conn.flush()


class Handler(Protocol):
    def dispatch(self, request: Request, reply: Reply) -> None: ...


BAD_REQUEST = Answer(400, b'{"status":"error","message":"malformed HTTP request"}')


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests and writes their answers in order."""

    __slots__ = (
        "_body",
        "_closing",
        "_head_size",
        "_headers",
        "_lingering",
        "_oversize",
        "_parser",
        "_paused",
        "_pending",
        "_size",
        "_transport",
        "_url",
        "deadline",
        "server",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._pending: collections.deque[Reply] = collections.deque()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._head_size = 0
        self._oversize = False
        self._closing = False
        self._lingering: asyncio.Transport | None = None
        self._paused = False
        self.deadline = 0.0

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)
        self.deadline = self.server.now() + self.server.keepalive_s

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._transport = self._lingering = None
        self.server.connections.discard(self)

    def eof_received(self) -> bool:
        """The client half-closed: answer what it asked, then close (True keeps the
        transport open for those answers)."""
        self._closing = True
        return bool(self._pending)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail()  # no WebSocket or h2c here
        except httptools.HttpParserError:
            self._fail()

    # --- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._size = 0
        self._head_size = 0
        self._oversize = False
        self.deadline = self.server.now() + self.server.request_timeout_s

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD_BYTES:  # feed_data re-raises it as a parser error
            raise ValueError("request head too large")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        expect = False
        for key, value in self._headers:
            if key == b"content-length":
                if value.isdigit() and int(value) > self.server.max_body_bytes:
                    self._oversize = True  # refused by size alone; the body is dropped
            elif key == b"expect":
                expect = value.lower() == b"100-continue"
        if expect and not self._oversize and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._oversize:
            return
        self._size += len(body)
        if self._size > self.server.max_body_bytes:
            self._oversize = True
            self._body = []
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._closing:
            return
        parser = self._parser
        method = parser.get_method()
        close = not parser.should_keep_alive()
        reply = Reply(self, close, method == b"HEAD")
        self._pending.append(reply)
        if close:
            self._closing = True  # nothing after this request is read
        elif len(self._pending) >= MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True
        url = self._url
        query = url.find(b"?")
        path = url if query < 0 else url[:query]
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(method, path, self._headers, body, self._oversize)
        try:
            self.server.handler.dispatch(request, reply)
        except Exception:
            self.server.on_error()
            reply.send(self.server.internal_error)

    # --- answers ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every answer that is ready, in request order."""
        pending = self._pending
        transport = self._transport
        while pending and pending[0].wire is not None:
            reply = pending.popleft()
            if transport is None:
                continue  # the client left; its answers go nowhere
            transport.write(reply.wire)  # type: ignore[arg-type]
            if reply.close:
                self._linger(transport)
                transport = None
        if transport is not None and not pending:
            if self._closing:
                transport.close()
            elif self._paused:
                self._paused = False
                transport.resume_reading()
            self.deadline = self.server.now() + self.server.keepalive_s

    def _linger(self, transport: asyncio.Transport) -> None:
        """Close after the last answer without losing it: send FIN, drop what the client
        still sends, and close when it closes (or LINGER_S later). Closing at once with
        unread bytes would send a reset, and the client could lose the answer with it."""
        self._closing = True
        self._pending.clear()
        self._transport = None
        if transport.can_write_eof():
            transport.write_eof()
            self._lingering = transport
            self.deadline = self.server.now() + LINGER_S
        else:
            transport.close()

    def _fail(self) -> None:
        """A request we cannot parse: answer 400 after what is owed, then close."""
        self._closing = True
        reply = Reply(self, True, False)
        self._pending.append(reply)
        reply.send(BAD_REQUEST)

    def idle_past(self, now: float) -> bool:
        """True when this connection owes nothing and has waited past its deadline."""
        return not self._pending and now > self.deadline

    def close(self) -> None:
        self._closing = True
        for transport in (self._transport, self._lingering):
            if transport is not None:
                transport.close()
        self._transport = self._lingering = None


class HttpServer:
    """Accepts connections on a socket and runs them through one `Handler`."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int,
        internal_error: Answer,
        keepalive_s: float = 5.0,
        request_timeout_s: float = 30.0,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.internal_error = internal_error
        self.keepalive_s = keepalive_s
        self.request_timeout_s = request_timeout_s
        self.on_error = on_error
        self.connections: set[HttpConnection] = set()
        self.draining = False
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def start(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: HttpConnection(self), sock=sock, backlog=4096
        )
        self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close idle keep-alive connections and requests that never finish arriving."""
        while True:
            await asyncio.sleep(1.0)
            now = self.now()
            for conn in [c for c in self.connections if c.idle_past(now)]:
                conn.close()

    def owed(self) -> int:
        return sum(len(c._pending) for c in self.connections)

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting; answer what was asked (within `timeout_s`); close the rest."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        assert self._loop is not None
        deadline = self._loop.time() + timeout_s
        while self.owed() and self._loop.time() < deadline:
            for conn in [c for c in self.connections if not c._pending]:
                conn.close()
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()


def listen(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """The listening socket, made before workers fork so they all accept on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
