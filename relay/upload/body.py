"""Request bodies read from the spooled file as they are sent, never held whole.

A clip or a part is a range of the clip's data file. Each attempt opens the range
afresh and the HTTP client reads it in small pieces (aiohttp: 64 KiB), so memory per
upload stays small and flat however long an outage makes the relay retry; reading a
whole clip or part into new buffers on every attempt made RSS grow for as long as S3
was down. Checksums are taken the same way, a piece at a time, in a worker thread.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import crc32c

from relay.spool.clip import crc32c_b64

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
