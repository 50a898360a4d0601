"""A device emulator: sends clips the way AXIS firmware does, over a raw TLS socket.

Raw sockets, not an HTTP client library, so a test controls the framing exactly:
fixed Content-Length or chunked, a slow real-time pace, a body that stops short.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Device:
    host: str
    port: int
    ssl_context: ssl.SSLContext | None
    source: str | None = None  # the address to send from (any 127.x.y.z on loopback)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        local = (self.source, 0) if self.source else None
        return await asyncio.open_connection(self.host, self.port, ssl=self.ssl_context, local_addr=local)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | Iterable[bytes] = b"",
        headers: dict[str, str] | None = None,
        chunked: bool = False,
        pace_s: float = 0.0,
        content_length: int | None = None,
    ) -> Answer:
        """Send one request; ``body`` may be an iterable of pieces sent ``pace_s`` apart."""
        reader, writer = await self._open()
        try:
            pieces = [body] if isinstance(body, bytes) else list(body)
            head = {"Host": f"{self.host}:{self.port}", "User-Agent": "AXIS-emulator", "Connection": "close"}
            head.update(headers or {})
            if chunked:
                head["Transfer-Encoding"] = "chunked"
            elif method in ("POST", "PUT"):
                total = sum(len(p) for p in pieces)
                head["Content-Length"] = str(total if content_length is None else content_length)
            lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            for piece in pieces:
                if pace_s:
                    await asyncio.sleep(pace_s)  # a device streams at real-time speed
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
            return await read_answer(reader, with_body=method != "HEAD")
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def post_clip(
        self,
        path: str,
        clip: bytes,
        *,
        filename: str | None = "video23-04-13_21-50-27-63_00001.mkv",
        content_type: str = "video/x-matroska",
        chunked: bool = False,
        pieces: int = 1,
        pace_s: float = 0.0,
        extra_headers: dict[str, str] | None = None,
    ) -> Answer:
        headers = {"Content-Type": content_type}
        if filename is not None:
            headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        headers.update(extra_headers or {})
        step = max(1, -(-len(clip) // pieces))
        body = [clip[i : i + step] for i in range(0, len(clip), step)] or [b""]
        return await self.request("POST", path, body=body, headers=headers, chunked=chunked, pace_s=pace_s)

    async def start_clip(
        self, path: str, first_part: bytes, total_length: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a fixed-length upload and send only its first part; the caller decides its end."""
        reader, writer = await self._open()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: video/x-matroska\r\n"
            f'Content-Disposition: attachment; filename="partial.mkv"\r\nContent-Length: {total_length}\r\n\r\n'
        )
        writer.write(head.encode() + first_part)
        await writer.drain()
        return reader, writer


async def read_answer(reader: asyncio.StreamReader, with_body: bool = True) -> Answer:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed without an answer")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length and with_body else b""
    return Answer(status, headers, body)
