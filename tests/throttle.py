"""A user-space TCP proxy that slows the relay's uploads, so a test can act mid-upload."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bytes_per_s: float | None) -> None:
    loop = asyncio.get_running_loop()
    started, sent = loop.time(), 0
    try:
        while chunk := await reader.read(64 * 1024):
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            if bytes_per_s:
                # Pacing, not waiting for a state: this is what makes the link slow.
                ahead = sent / bytes_per_s - (loop.time() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    except OSError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def throttled(target_host: str, target_port: int, bytes_per_s: float) -> AsyncIterator[int]:
    """Listen on a free loopback port; yields it. Upstream traffic is paced to ``bytes_per_s``."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        for coro in (_pipe(client_r, server_w, bytes_per_s), _pipe(server_r, client_w, None)):
            task = asyncio.create_task(coro)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
