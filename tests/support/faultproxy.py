"""A user-space TCP proxy between the relay and S3 that misbehaves on purpose.

`tc netem` is not available here, so faults are injected in user space: added
latency, a bandwidth cap, connections reset after some bytes, connections that stall.
TLS passes through untouched (the relay still verifies S3's certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    bytes_per_s: float | None = None  # upstream bandwidth cap
    latency_s: float = 0.0  # added before each upstream chunk
    reset_connections: int = 0  # this many next connections are reset ...
    stall_connections: int = 0  # ... or stalled (forward nothing more, close nothing) ...
    after_bytes: int = 256 * 1024  # ... after this many upstream bytes
    injected: list[str] = field(default_factory=list)  # what actually happened
    upstream_bytes: int = 0  # every byte forwarded to the server: the relay's uplink, as a meter
    connections: int = 0


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, faults: Faults) -> None:
        self.target = (target_host, target_port)
        self.faults = faults
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _upstream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: str | None,
        client: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        started, sent = loop.time(), 0
        f = self.faults
        try:
            while chunk := await reader.read(64 * 1024):
                if fault and sent + len(chunk) > f.after_bytes:
                    f.injected.append(fault)
                    if fault == "reset":
                        client.transport.abort()
                        writer.transport.abort()
                        return
                    await asyncio.Event().wait()  # stall: hold the connection open, silent
                if f.latency_s:
                    await asyncio.sleep(f.latency_s)
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
                f.upstream_bytes += len(chunk)
                if f.bytes_per_s and (ahead := sent / f.bytes_per_s - (loop.time() - started)) > 0:
                    await asyncio.sleep(ahead)  # pacing is what makes the link slow
        except OSError:
            pass
        finally:
            writer.close()

    @staticmethod
    async def _downstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(64 * 1024):
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.faults.connections += 1
        fault = None
        if self.faults.reset_connections > 0:
            self.faults.reset_connections -= 1
            fault = "reset"
        elif self.faults.stall_connections > 0:
            self.faults.stall_connections -= 1
            fault = "stall"
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        for coro in (self._upstream(client_r, server_w, fault, client_w), self._downstream(server_r, client_w)):
            task = asyncio.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def endpoint_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def abort_all(self) -> None:
        """Cut every connection in progress; the relay sees them fail and retries."""
        for task in list(self._tasks):
            task.cancel()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[FaultProxy]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def in_front_of(endpoint_url: str, faults: Faults) -> AsyncIterator[FaultProxy]:
    """A proxy in front of an HTTPS endpoint on loopback (the test S3); point the relay
    at its ``endpoint_url`` instead, and change ``faults`` while it runs."""
    async with FaultProxy("127.0.0.1", int(endpoint_url.rsplit(":", 1)[1]), faults).running() as proxy:
        yield proxy


@dataclass
class Scripted:
    """An answer S3 documents but the test server never gives, for the next ``count``
    requests whose request line ``matches``."""

    matches: Callable[[bytes], bool]
    status: int
    reason: str
    code: str
    message: str
    count: int = 1

    def response(self, to_head: bool) -> bytes:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{self.code}</Code>'
            f"<Message>{self.message}</Message></Error>"
        ).encode()
        if to_head:
            body = b""  # S3 answers HEAD with the status alone
        head = (
            f"HTTP/1.1 {self.status} {self.reason}\r\nContent-Type: application/xml\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


def put_object(line: bytes) -> bool:
    return line.startswith(b"PUT ") and b"uploadId=" not in line


def head_object(line: bytes) -> bool:
    return line.startswith(b"HEAD ")


def complete_multipart(line: bytes) -> bool:
    return line.startswith(b"POST ") and b"uploadId=" in line


def any_request(line: bytes) -> bool:
    return True


@dataclass
class AnswerProxy:
    """Terminates TLS, answers requests that match a script with its S3 error, and
    passes the rest through (re-encrypted) to the real server, bytes untouched."""

    target_port: int
    server_ssl: Any
    client_ssl: Any
    script: list[Scripted]
    answered: int = 0
    port: int = 0
    # Every request head seen, scripted or passed through.
    heads: list[bytes] = field(default_factory=list)
    # Take every scripted request's body before answering, as S3 does when it reads the
    # upload and then refuses it: "100 Continue" to a client that waits for it, then every
    # byte read and counted (a proxy that refused at the head would see no body at all).
    read_bodies: bool = False
    body_bytes: int = 0

    def _scripted(self, request_line: bytes) -> Scripted | None:
        for answer in self.script:
            if answer.count > 0 and answer.matches(request_line):
                answer.count -= 1
                return answer
        return None

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            head = await client_r.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            answer = self._scripted(head.split(b"\r\n", 1)[0])
            if answer is not None:
                self.answered += 1
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                if self.read_bodies and b"100-continue" in head.lower():
                    client_w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await client_w.drain()
                if self.read_bodies or b"100-continue" not in head.lower():
                    left = length  # else the client waits for our verdict first
                    while left:
                        piece = await client_r.read(min(left, 1 << 20))
                        if not piece:
                            raise asyncio.IncompleteReadError(b"", left)
                        left -= len(piece)
                        self.body_bytes += len(piece)
                client_w.write(answer.response(to_head=head.startswith(b"HEAD ")))
                await client_w.drain()
                return
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port, ssl=self.client_ssl)
            # One request per connection, so that the script sees every request: the
            # server closes after answering, and the client opens a new one.
            lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
            server_w.write(b"\r\n".join([*lines[:-2], b"Connection: close", b"", b""]))
            await asyncio.gather(FaultProxy._downstream(client_r, server_w), FaultProxy._downstream(server_r, client_w))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            client_w.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AnswerProxy]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.server_ssl)
        self.port = int(server.sockets[0].getsockname()[1])
        try:
            yield self
        finally:
            server.close()


def SlowDownProxy(
    target_port: int, server_ssl: Any, client_ssl: Any, count: int, *, read_bodies: bool = False
) -> AnswerProxy:
    """The first ``count`` requests get S3's 503 SlowDown."""
    slow_down = Scripted(any_request, 503, "Slow Down", "SlowDown", "Please reduce your request rate.", count)
    return AnswerProxy(target_port, server_ssl, client_ssl, [slow_down], read_bodies=read_bodies)
