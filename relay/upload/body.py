"""Request bodies read from the spooled file as they are sent, never held whole.

A clip or a part is a range of the clip's data file. Each attempt opens the range
afresh and the HTTP client reads it in small pieces (SEND_PIECE), so memory per
upload stays small and flat however long an outage makes the relay retry; reading a
whole clip or part into new buffers on every attempt made RSS grow for as long as S3
was down. Checksums are taken the same way, a piece at a time, in a worker thread.

aiohttp sends a file-like body by reading it 64 KiB at a time, each read a trip to a
worker thread and back to the event loop (a future, the GIL handed over twice, a
wake-up through the loop's self-pipe): some 16,000 trips per gigabyte.
``FileWindowPayload``, registered with aiohttp for ``FileWindow`` only (the S3 client's
bodies and the API Gateway's alike), reads SEND_PIECE at a time, on the event loop
itself when the page cache holds the bytes (RWF_NOWAIT: a clip just received is still
there), and in a worker thread only when they must come from the disk. The upload leg
alone (bench/upload_cpu.py: 48 clips of 7.5 MB, two at a time, to the test S3 over TLS):
1.70 -> 1.14 CPU s/GB, medians of 8 runs each; 256 KiB pieces against 64 KiB, both
read on the loop: 1.09 against 1.26.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import crc32c
import structlog
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import IOBasePayload, Order, register_payload

from relay.spool.clip import crc32c_b64
from relay.tasks import cancel_and_wait

log = structlog.get_logger("relay.upload")

CHECKSUM_PIECE = 1024 * 1024
# Four times aiohttp's 64 KiB: a quarter of the calls into the TLS layer and of the
# reads. Not larger: a piece is encrypted on the event loop in one go, and ingest's
# answers wait behind it; 256 KiB is some 70 us here with AES instructions, an estimated
# 4 ms on a Pi 4 core with AES-GCM and 1.3 ms with ChaCha20 (the published `openssl
# speed` figures in docs/benchmarks.md).
SEND_PIECE = 256 * 1024
# Linux 4.14 and later; elsewhere every piece is read in a worker thread, as before.
_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


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

    def _wanted(self, size: int | None) -> int:
        """``size`` bytes (all, if None or negative), cut to what is left of the window."""
        left = self._length - self._position
        return left if size is None or size < 0 else min(size, left)

    # Every read is positional (pread): the window's position is its own count, and the
    # file's offset is never used.

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        wanted = self._wanted(len(buffer))
        if wanted <= 0:
            return 0
        got = os.preadv(self._file.fileno(), [memoryview(buffer)[:wanted]], self._start + self._position)
        self._position += got
        return got

    def read_cached(self, size: int) -> bytearray | None:
        """Up to ``size`` bytes, only if the page cache has them (RWF_NOWAIT): a read
        the event loop can make without a trip to a worker thread. None when they must
        come from the disk (a backlog after an outage), or the filesystem cannot tell."""
        wanted = self._wanted(size)
        if wanted <= 0:
            return bytearray()
        if _NOWAIT is None:
            return None
        # A new buffer each time: the TLS transport keeps a reference to what it sends.
        buffer = bytearray(wanted)
        try:
            got = os.preadv(self._file.fileno(), [buffer], self._start + self._position, _NOWAIT)
        except OSError:  # EAGAIN: not cached; EOPNOTSUPP: no RWF_NOWAIT here
            return None
        if got == 0:
            return None  # cached but not a byte of it (a short file), or nothing cached
        self._position += got
        if got < wanted:
            del buffer[got:]
        return buffer

    def read(self, size: int | None = -1) -> bytes:
        """One pread, no buffer filled and then copied into bytes (what RawIOBase.read
        does through readinto)."""
        wanted = self._wanted(size)
        if wanted <= 0:
            return b""
        got = os.pread(self._file.fileno(), wanted, self._start + self._position)
        self._position += len(got)
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


class FileWindowPayload(IOBasePayload):
    """aiohttp's payload for a FileWindow: IOBasePayload's, reading SEND_PIECE bytes at
    a time, from the page cache on the loop where it can. The S3 client wraps the
    window in a proxy before aiohttp sees it; the proxy passes isinstance() for
    FileWindow, so the registration below finds it either way. Written again (aiohttp
    re-sends a payload on a redirect), it starts from where it first started."""

    _value: FileWindow
    _first_position: int | None = None

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        # The window's position is its own count (no I/O): set here, on the loop.
        if self._first_position is None:
            self._first_position = self._value.tell()
        else:
            self._value.seek(self._first_position)
        loop = asyncio.get_running_loop()
        remaining = content_length
        while remaining is None or remaining > 0:
            wanted = SEND_PIECE if remaining is None else min(SEND_PIECE, remaining)
            piece: bytes | bytearray | None = self._value.read_cached(wanted)
            if piece is None:
                piece = await loop.run_in_executor(None, self._value.read, wanted)
            if not piece:
                return
            await writer.write(piece)
            if remaining is not None:
                remaining -= len(piece)


# try_first: aiohttp would find its own IOBasePayload for any io.IOBase before a
# registration of the usual order.
register_payload(FileWindowPayload, FileWindow, order=Order.try_first)


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
