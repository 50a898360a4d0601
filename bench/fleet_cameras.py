"""A fleet of cameras for bench/fleet.py: each streams clips at real-time pace over TLS.

    python bench/fleet_cameras.py '{"url": "https://127.0.0.1:8443/upload/{camera}?accessToken=t", ...}'

Runs in its own process, so that its CPU is never counted as the server's and its event
loop is never stalled by the server's. Each camera opens a connection per clip (as a
device with no keep-alive would), sends the head, then the body in pieces on a fixed
schedule (bitrate / 8 bytes a second, no drift), and measures the time from its last
byte leaving for the kernel to the answer's status line. Camera starts are spread over
one clip's length, so the load is as smooth as a real site's. Prints JSON on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.footage import FPS, matroska

PIECE = 32 * 1024
# Every camera's accessToken on the relay under test.
TOKEN = "fleet-token"


@dataclass(frozen=True)
class Plan:
    url: str  # with {camera}, and {file} where the path names the file
    cameras: int
    clips: int
    clip_s: float
    bitrate_bps: int
    chunked: bool
    method: str
    ca_file: str
    tag: str
    # A camera's clip bytes: 0 = bitrate x clip length; unpaced sends as fast as it can.
    clip_bytes: int = 0
    paced: bool = True

    @property
    def size(self) -> int:
        return self.clip_bytes or int(self.bitrate_bps / 8 * self.clip_s)


def camera_name(index: int) -> str:
    return f"cam-{index:03d}"


class Camera:
    def __init__(self, plan: Plan, index: int, body: memoryview, context: ssl.SSLContext) -> None:
        self._plan = plan
        self._name = camera_name(index)
        self._body = body
        self._context = context
        _, rest = plan.url.split("://", 1)
        hostport, _, path = rest.partition("/")
        self._host, _, port = hostport.partition(":")
        self._port = int(port or 443)
        self._path = "/" + path.replace("{camera}", self._name)  # and {file}: nginx's PUT target
        self.acks: list[float] = []
        self.errors: list[str] = []

    async def run(self, start_at: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start_at - loop.time()))
        for clip in range(self._plan.clips):
            try:
                await self._send(clip)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                self.errors.append(f"{self._name} clip {clip}: {type(exc).__name__}: {exc}")

    async def _send(self, clip: int) -> None:
        plan = self._plan
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(self._host, self._port, ssl=self._context)
        filename = f"{self._name}_{plan.tag}_{clip:04d}.mkv"
        length = "Transfer-Encoding: chunked" if plan.chunked else f"Content-Length: {plan.size}"
        target = self._path.replace("{file}", filename)
        head = (
            f"{plan.method} {target} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f'Content-Type: video/x-matroska\r\nContent-Disposition: attachment; filename="{filename}"\r\n'
            f"{length}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode())
        rate = plan.bitrate_bps / 8
        began = loop.time()
        try:
            for offset in range(0, plan.size, PIECE):
                if plan.paced:
                    await asyncio.sleep(max(0.0, began + offset / rate - loop.time()))
                piece = self._body[offset : min(offset + PIECE, plan.size)]
                if plan.chunked:  # one write per chunk, as a C client's writev would send it
                    writer.write(b"%x\r\n%b\r\n" % (len(piece), bytes(piece)))
                else:
                    writer.write(piece)
                await writer.drain()
            if plan.chunked:
                writer.write(b"0\r\n\r\n")
            await sent(writer)
            last_byte = time.perf_counter()
            status_line = await asyncio.wait_for(reader.readline(), 120)
            acked = time.perf_counter()
            parts = status_line.split()
            if len(parts) < 2 or not parts[1].startswith(b"2"):
                rest = await asyncio.wait_for(reader.read(2000), 5)
                raise ValueError(f"answered {status_line!r} {rest[-300:]!r}")
            self.acks.append(acked - last_byte)
            await asyncio.wait_for(reader.read(), 30)  # the rest of the answer, then EOF
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def sent(writer: asyncio.StreamWriter) -> None:
    """Until every byte written is handed to the kernel: the clock for the answer starts
    when the last byte has left the camera, not when it was queued. (A write buffer
    limit of 0 would say so through drain(), but Python 3.11's TLS transport then never
    resumes.)"""
    await writer.drain()
    raw = getattr(getattr(writer.transport, "_ssl_protocol", None), "_transport", None)
    # No event says "handed to the kernel": poll, yielding to the loop.
    while writer.transport.get_write_buffer_size() or (raw is not None and raw.get_write_buffer_size()):  # noqa: ASYNC110
        await asyncio.sleep(0)


async def run(plan: Plan) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=plan.ca_file)
    # A real Matroska header (the relay reads the clip's times from it), then noise.
    header = next(iter(matroska("fleet", range(0, int(plan.clip_s * FPS)))))
    body = memoryview(header + os.urandom(plan.size - len(header)))
    cameras = [Camera(plan, i, body, context) for i in range(plan.cameras)]
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    spread = plan.clip_s if plan.paced else 0.0
    began = time.perf_counter()
    await asyncio.gather(*(c.run(start + spread * i / plan.cameras) for i, c in enumerate(cameras)))
    return {
        "acks_s": [a for c in cameras for a in c.acks],
        "errors": [e for c in cameras for e in c.errors],
        "bytes": plan.size * sum(len(c.acks) for c in cameras),
        "seconds": time.perf_counter() - began,
        "cpu_s": (lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(resource.RUSAGE_SELF)),
    }


def main() -> None:
    plan = Plan(**json.loads(sys.argv[1]))
    json.dump(asyncio.run(run(plan)), sys.stdout)


if __name__ == "__main__":
    main()
