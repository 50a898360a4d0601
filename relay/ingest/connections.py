"""How many connections the ingest listener holds, and for how long a silent one may stay.

A flood of idle connections (no request, or a TLS handshake never finished) must not
exhaust the process's file descriptors or its memory (a TLS connection costs about a
quarter of a MB), and must not keep a real device out. So:

- a TLS handshake must finish within ``ingest.head_timeout_s`` (asyncio's own
  handshake deadline, set on the listening socket);
- a connection must start a request within ``ingest.head_timeout_s`` of being
  established, or it is closed;
- at most ``cap`` established connections are held: a new one over the cap closes the
  oldest connection that has no request in progress (a device mid-upload is never
  cut for a newcomer); if every one is busy, the newcomer is closed.

The cap is the smaller of ``ingest.max_connections`` and half the process's file
descriptor limit, the other half left for the spool, S3 and the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import structlog
from aiohttp import web

from relay.ingest.handshakes import HandshakeWatch

log = structlog.get_logger("relay.ingest")


def connection_cap(configured: int) -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(8, min(configured, soft // 2)) if soft != resource.RLIM_INFINITY else configured


class _Tracked(asyncio.Protocol):
    """aiohttp's request handler, seen by the guard: every call is passed through."""

    def __init__(self, inner: Any, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self.transport: asyncio.BaseTransport | None = None
        self.opened_at = time.monotonic()
        self.requests = 0  # started so far
        self.busy = 0  # in progress now

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.opened_at = time.monotonic()
        self._inner.connection_made(transport)
        self._guard.opened(self)

    def data_received(self, data: bytes) -> None:
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

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class ConnectionGuard:
    def __init__(self, cap: int, head_timeout_s: float, watch: HandshakeWatch | None = None) -> None:
        self.cap = cap
        self.watch = watch  # failed TLS handshakes; its summaries are flushed by the sweep
        self._head_timeout_s = head_timeout_s
        self._live: dict[_Tracked, None] = {}  # oldest first
        self._by_transport: dict[int, _Tracked] = {}
        self.closed_idle = 0  # connections closed to make room, or for never starting a request

    def factory(self, inner: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Tracked(inner(), self)

    def opened(self, connection: _Tracked) -> None:
        if len(self._live) >= self.cap:
            oldest_idle = next((c for c in self._live if not c.busy), None)
            victim = oldest_idle or connection
            victim.close()
            self.closed_idle += 1
            if self.closed_idle == 1 or self.closed_idle % 100 == 0:
                log.warning("ingest_connections_full", cap=self.cap, closed=self.closed_idle)
            if victim is connection:
                return
        self._live[connection] = None
        self._by_transport[id(connection.transport)] = connection

    def closed(self, connection: _Tracked) -> None:
        self._live.pop(connection, None)
        self._by_transport.pop(id(connection.transport), None)

    @contextlib.contextmanager
    def request(self, transport: asyncio.BaseTransport | None) -> Iterator[None]:
        """Marks the connection busy while a request is handled."""
        connection = self._by_transport.get(id(transport))
        if connection is not None:
            connection.requests += 1
            connection.busy += 1
        try:
            yield
        finally:
            if connection is not None:
                connection.busy -= 1

    def sweep(self) -> None:
        """Close connections that never started a request within the head deadline."""
        if self.watch is not None:
            self.watch.flush()
        now = time.monotonic()
        for connection in list(self._live):
            if not connection.requests and not connection.busy and now - connection.opened_at > self._head_timeout_s:
                connection.close()
                self.closed_idle += 1

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
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


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
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        app = self._app_protocol()
        assert self._ssl_context is not None
        try:
            tls = await asyncio.get_running_loop().start_tls(
                transport, app, self._ssl_context, server_side=True, ssl_handshake_timeout=self._handshake_timeout_s
            )
        except (OSError, EOFError) as exc:  # ssl.SSLError and the connection errors are OSErrors
            # start_tls has closed the transport already.
            if self._watch is not None:
                self._watch.failed(source, exc)
            return
        if tls is None:  # the connection went away as the handshake ended
            transport.close()
            return
        if self._watch is not None:
            self._watch.succeeded(source)
        app.connection_made(tls)

    async def stop(self) -> None:
        for task in list(self._handshakes):
            task.cancel()
        await super().stop()
