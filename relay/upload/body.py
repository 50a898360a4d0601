"""Request bodies read from the spooled file as they are sent, never held whole.

A clip or a part is a range of the clip's data file. Each attempt opens the range
afresh and the HTTP client reads it in small pieces (aiohttp: 64 KiB), so memory per
upload stays small and flat however long an outage makes the relay retry; reading a
whole clip or part into new buffers on every attempt made RSS grow for as long as S3
was down. Checksums are taken the same way, a piece at a time, in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import crc32c
import structlog

from relay.spool.clip import crc32c_b64
from relay.tasks import cancel_and_wait

log = structlog.get_logger("relay.upload")

CHECKSUM_PIECE = 1024 * 1024


@dataclass(frozen=True)
class FileRange:
    path: Path
    offset: int
    length: int

    def open(self) -> FileWindow:
        return FileWindow(self.path, self.offset, self.length)

    def checksums(self, running: int) -> tuple[str, int]:
        """The range's own CRC32C (base64, as S3 takes it) and ``running`` extended over
        it; read a piece at a time (blocking: call it from a thread)."""
        own = 0
        with self.open() as stream:
            while piece := stream.read(CHECKSUM_PIECE):
                own = crc32c.crc32c(piece, own)
                running = crc32c.crc32c(piece, running)
        return crc32c_b64(own), running

    @contextlib.asynccontextmanager
    async def sending(self, what: str, *, stall_warning_s: float, give_up_s: float) -> AsyncIterator[FileWindow]:
        """The range opened for one request, and watched. When the client reads nothing
        from it for ``stall_warning_s`` (a peer that stopped without closing), a warning
        says so at once. When that lasts ``give_up_s``, the request is ended
        (UploadStalled, retried): a client blocked writing to a full socket is not
        covered by its read timeout, and would wait for TCP to give up (minutes). Having
        read all of the range proves nothing: the last of it may still wait in the
        client's buffers; and a PUT is answered as soon as its body has arrived."""
        with self.open() as stream:
            try:
                async with asyncio.timeout(None) as deadline:
                    watcher = asyncio.create_task(_watch(stream, what, stall_warning_s, give_up_s, deadline))
                    try:
                        yield stream
                    finally:
                        await cancel_and_wait([watcher])
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise UploadStalled(
                    f"{what}: {stream.tell()} of {len(stream)} bytes read, then nothing moved for {give_up_s:g} s"
                ) from None


class UploadStalled(TimeoutError):
    """A request whose body stopped moving; transient, so it is retried."""


class FileWindow(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of a file from ``offset``.

    It has a length (botocore takes Content-Length from it) and no fileno(), so no
    client mistakes the whole file's size for the body's.
    """

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self._start = offset
        self._length = length
        self._position = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = min(len(buffer), self._length - self._position)
        if wanted <= 0:
            return 0
        self._file.seek(self._start + self._position)
        got = self._file.readinto(memoryview(buffer)[:wanted]) or 0
        self._position += got
        return got

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, min(self._length, base + offset))
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        self._file.close()
        super().close()


async def _watch(
    stream: FileWindow, what: str, warn_after_s: float, give_up_s: float, deadline: asyncio.Timeout
) -> None:
    loop = asyncio.get_running_loop()
    position, since, warned = stream.tell(), loop.time(), False
    while True:
        await asyncio.sleep(min(1.0, warn_after_s / 4))
        if stream.tell() != position:
            position, since, warned = stream.tell(), loop.time(), False
            continue
        still = loop.time() - since
        if still >= warn_after_s and not warned:
            warned = True
            log.warning(
                "upload_stalled",
                request=what,
                read_bytes=position,
                of_bytes=len(stream),
                seconds=round(still, 1),
                gives_up_in_s=round(give_up_s - still, 1),
            )
        if still >= give_up_s:
            deadline.reschedule(loop.time())
            return
