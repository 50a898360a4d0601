"""How many connections the ingest listener holds, and for how long a silent one may stay.

A flood of idle connections (no request, or a TLS handshake never finished, or a client
that never reads and so never answers a TLS close) must not exhaust the process's file
descriptors or its memory (a TLS connection costs about a quarter of a MB), and must
not keep a real device out. So:

- a connection counts from the moment it is accepted, its TLS handshake included;
- a TLS handshake must finish within ``ingest.head_timeout_s``, and then a request must
  start within ``ingest.head_timeout_s``, or the connection is cut; so must the head of
  every later request on a kept-alive connection, from its first byte;
- at most ``cap`` connections are held: a new one over the cap cuts the oldest
  connection that has no request in progress (idle, or still in its handshake), so a
  device gets in during a flood; a device mid-upload is never cut for a newcomer. If
  every one is busy, the newcomer is cut at once;
- a connection is cut with ``abort()``: its descriptor is free at once. ``close()`` on a
  TLS connection only starts the close_notify exchange, which a client that never reads
  never finishes, and the descriptor would stay for asyncio's 30 s shutdown timeout.

The cap leaves room for what the relay must always be able to open (``fd_budget``).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from relay.ingest.handshakes import HandshakeWatch
from relay.tasks import cancel_and_wait

log = structlog.get_logger("relay.ingest")

# Descriptors the relay needs whatever the devices do: the listeners, the ledger (its
# file, journal and WAL), the event loop, thread pools, logs, a directory fsync, and
# about 4 per upload worker (its S3 connections, the spooled file it reads).
FD_RESERVE_FIXED = 64
FD_PER_UPLOAD_WORKER = 4


@dataclass(frozen=True)
class FdBudget:
    """How the file descriptor limit is shared: every held connection may also hold
    the spool file its clip is written to, so each costs up to two."""

    limit: int | None  # RLIMIT_NOFILE (soft); None: unlimited
    reserve: int
    configured: int  # ingest.max_connections
    cap: int

    def explain(self) -> str:
        if self.limit is None:
            return f"connections: at most {self.cap} (ingest.max_connections; no file descriptor limit)"
        return (
            f"connections: at most {self.cap} = min(ingest.max_connections {self.configured}, "
            f"(file descriptor limit {self.limit} - reserve {self.reserve}) / 2 descriptors each)"
        )


def fd_budget(configured: int, upload_workers: int) -> FdBudget:
    reserve = FD_RESERVE_FIXED + FD_PER_UPLOAD_WORKER * upload_workers
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return FdBudget(None, reserve, configured, configured)
    return FdBudget(soft, reserve, configured, max(8, min(configured, (soft - reserve) // 2)))


class _Tracked(asyncio.Protocol):
    """aiohttp's request handler, seen by the guard: every call is passed through."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self.transport: asyncio.BaseTransport | None = None
        # The TCP transport while a TLS handshake is under way (the site sets it).
        self.raw: asyncio.Transport | None = None
        self.opened_at = time.monotonic()
        self.requests = 0  # started so far
        self.busy = 0  # in progress now
        # When bytes of a request not yet handled began to arrive (its head, trickled
        # perhaps): the head deadline runs from there, for every request of the connection.
        self.head_since: float | None = None
        self.cut = False  # by the guard: not a handshake failure of the client's

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._inner.connection_made(transport)
        if self.raw is None and not self._guard.accepted(self):  # plain HTTP: accepted now
            return
        self._guard.established(self)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self.head_since is None:
            self.head_since = time.monotonic()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.closed(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def abort(self) -> None:
        self.cut = True
        transport = self.transport or self.raw
        if transport is not None:
            transport.abort()  # type: ignore[attr-defined]


class ConnectionGuard:
    def __init__(self, cap: int, head_timeout_s: float, watch: HandshakeWatch | None = None) -> None:
        self.cap = cap
        self.watch = watch  # failed TLS handshakes; its summaries are flushed by the sweep
        self._head_timeout_s = head_timeout_s
        self._live: dict[_Tracked, None] = {}  # oldest first, handshakes included
        self._by_transport: dict[int, _Tracked] = {}
        self.closed_idle = 0  # connections cut for room or for never starting a request; each once
        self._warned_at = 0.0

    def factory(self, inner: Callable[[], Any]) -> Callable[[], _Tracked]:
        return lambda: _Tracked(inner(), self)

    def accepted(self, connection: _Tracked) -> bool:
        """A connection was accepted: hold it, making room if need be. False if every
        held connection is busy, and it was cut."""
        connection.opened_at = time.monotonic()
        if len(self._live) >= self.cap:
            # An idle connection first (a mute client has no claim), then a handshake, the
            # oldest first: a device's handshake under way is among the newest.
            victim = next((c for c in self._live if not c.busy and c.transport is not None), None)
            victim = victim or next((c for c in self._live if not c.busy), None)
            self._cut(victim or connection)
            if victim is None:
                return False
        self._live[connection] = None
        return True

    def established(self, connection: _Tracked) -> None:
        """Its TLS handshake is done (or there is none): requests can be matched to it."""
        connection.opened_at = time.monotonic()  # the head deadline runs from here
        if connection in self._live:
            self._by_transport[id(connection.transport)] = connection

    def closed(self, connection: _Tracked) -> None:
        self._live.pop(connection, None)
        self._by_transport.pop(id(connection.transport), None)

    def _cut(self, connection: _Tracked) -> None:
        self.closed(connection)
        connection.abort()
        self.closed_idle += 1
        now = time.monotonic()
        if now - self._warned_at > 60:  # a flood writes a line a minute, the count says the rest
            self._warned_at = now
            log.warning("ingest_connections_full", cap=self.cap, cut=self.closed_idle)

    @contextlib.contextmanager
    def request(self, transport: asyncio.BaseTransport | None) -> Iterator[None]:
        """Marks the connection busy while a request is handled."""
        connection = self._by_transport.get(id(transport))
        if connection is not None:
            connection.requests += 1
            connection.busy += 1
            connection.head_since = None
        try:
            yield
        finally:
            if connection is not None:
                connection.busy -= 1

    def sweep(self) -> None:
        """Cut connections that did not start a request within the head deadline of being
        established, or whose next request's head has been arriving for longer than it
        (slow headers on a kept-alive connection)."""
        if self.watch is not None:
            self.watch.flush()
        now = time.monotonic()
        for connection in list(self._live):
            if connection.transport is None:
                continue  # still in its TLS handshake: asyncio's deadline ends it, as a timeout
            if connection.busy:
                continue
            # No request yet since it was established, or the next one's head arriving.
            since = connection.opened_at if not connection.requests else connection.head_since
            if since is not None and now - since > self._head_timeout_s:
                self._cut(connection)

    @property
    def open_connections(self) -> int:
        return len(self._live)

    @contextlib.asynccontextmanager
    async def sweeping(self) -> AsyncIterator[None]:
        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(min(1.0, self._head_timeout_s / 2))
                self.sweep()

        task = asyncio.create_task(sweep_forever(), name="connection-sweep")
        try:
            yield
        finally:
            await cancel_and_wait([task])


class _Accepted(asyncio.Protocol):
    """A TCP connection before its TLS handshake. The handshake is done by asyncio's
    ``start_tls`` in a task of the site's, so that a failure reaches the relay with its
    reason: a server created with ``ssl=`` drops it without a word (outside debug mode)."""

    def __init__(self, site: GuardedSite) -> None:
        self._site = site

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # start_tls reads the ClientHello, not this protocol
        self._site.handshake(transport)


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site, with the guard around each connection, a TLS handshake
    deadline, and failed handshakes counted and logged (``HandshakeWatch``); aiohttp
    offers none of them (the body of start() is TCPSite's own)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._guard = guard
        self._watch = guard.watch
        self._handshake_timeout_s = guard._head_timeout_s
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._app_protocol = self._guard.factory(server)
        factory: Callable[[], asyncio.BaseProtocol] = (
            (lambda: _Accepted(self)) if self._ssl_context else self._app_protocol
        )
        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port

    def handshake(self, transport: asyncio.Transport) -> None:
        """A connection was accepted: it counts against the cap from now, and its TLS
        handshake runs in a task of its own."""
        app = self._app_protocol()
        app.raw = transport
        if not self._guard.accepted(app):
            return  # every held connection is busy: cut at once
        task = asyncio.get_running_loop().create_task(self._handshake(transport, app))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport, app: _Tracked) -> None:
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        assert self._ssl_context is not None
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, app, self._ssl_context, server_side=True, ssl_handshake_timeout=self._handshake_timeout_s
            )
        except (OSError, EOFError) as exc:  # ssl.SSLError and the connection errors are OSErrors
            # start_tls has closed the transport already.
            self._guard.closed(app)
            if self._watch is not None and not app.cut:  # cut for room: not the client's failure
                self._watch.failed(source, exc)
            return
        if tls is None:  # the connection went away as the handshake ended
            self._guard.closed(app)
            transport.abort()
            return
        if self._watch is not None:
            self._watch.succeeded(source)
        app.connection_made(tls)

    async def stop(self) -> None:
        for task in list(self._handshakes):
            task.cancel()
        await super().stop()
