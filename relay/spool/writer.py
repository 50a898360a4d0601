"""One clip streaming into the spool: batches written from worker threads, its
checksum taken on the way, and ``commit()`` making it durable.

What arrives from the socket is kept as the pieces it came in (no joining into a
buffer, no copy) and handed to a worker thread in batches, which writes them with one
``writev``, extends the CRC32C, and asks the kernel to start writing them to disk.
That last step keeps the final fsync short: without it, a 7.5 MB clip sat in the page
cache until the device's last byte, and its answer waited for all of it to reach the
disk (bench/fleet.py: ack p50 14 ms with 32 cameras).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import Any

import crc32c

from relay import crashpoints
from relay.spool.clip import ClipMeta, crc32c_b64
from relay.spool.store import SpanReader, SpoolStore

# Bytes gathered from the socket before one write+checksum in a worker thread: large
# enough that thread hand-offs cost little, small enough that memory stays flat with
# many cameras (each holds up to this much between batches).
WRITE_BATCH = 256 * 1024
# writev takes at most IOV_MAX (1024 on Linux) pieces at once.
IOV_MAX = 1024
SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Let the disk start on these bytes now (Linux ``sync_file_range``, which does not
    wait, as RocksDB's bytes_per_sync and PostgreSQL's flush_after do). Durability still
    comes from the fsync at commit; where the call is missing this only costs latency."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)


class ClipWriter:
    """Streams one clip into incoming/; ``commit()`` makes it durable and hands it on.

    The writes and the fsyncs run in worker threads; ``on_durable`` is called on the
    event loop once the clip is in queue/, so the caller's in-memory state is only
    ever changed by the loop.
    """

    def __init__(
        self,
        store: SpoolStore,
        clip_id: str,
        fields: dict[str, Any],
        on_durable: Callable[[ClipMeta], None],
        span_reader: SpanReader | None = None,
    ) -> None:
        self._store = store
        self._span_reader = span_reader
        self.clip_id = clip_id
        self._fields = fields
        self._on_durable = on_durable
        self._dir, self._file = store.open_incoming(clip_id)
        self._committed = False
        self._pieces: list[bytes] = []
        self._batched = 0
        self._crc = 0
        self.size = 0  # bytes written to the file so far
        self.pending_size = 0  # bytes received so far, written or still batched

    async def write(self, chunk: bytes) -> None:
        self._pieces.append(chunk)
        self._batched += len(chunk)
        self.pending_size += len(chunk)
        if self._batched >= WRITE_BATCH:
            await self.flush()
            crashpoints.reached(crashpoints.INGEST_MID_BODY)

    async def flush(self) -> None:
        """Write what is batched. If the disk is full, the file is cut back to what was
        written before and the batch kept, so the caller may make room and call again."""
        if not self._pieces:
            return
        pieces, length = self._pieces, self._batched
        self._crc = await asyncio.to_thread(self._write_pieces, pieces, length, self._crc)
        self._pieces, self._batched = [], 0
        self.size += length

    def _write_pieces(self, pieces: list[bytes], length: int, crc: int) -> int:
        fd = self._file.fileno()
        views = [memoryview(p) for p in pieces if p]
        done = 0  # pieces written whole; an index, so thousands of tiny ones stay linear
        try:
            while done < len(views):
                written = os.writev(fd, views[done : done + IOV_MAX])
                while done < len(views) and written >= len(views[done]):
                    written -= len(views[done])
                    done += 1
                if written:
                    views[done] = views[done][written:]
        except OSError:
            self._file.truncate(self.size)
            self._file.seek(self.size)
            raise
        for piece in pieces:
            crc = crc32c.crc32c(piece, crc)
        start_writeback(fd, self.size, length)
        return crc

    async def commit(self, extra_query: dict[str, str] | None = None) -> ClipMeta:
        await self.flush()
        fields = dict(self._fields)
        if extra_query:
            fields["query"] = {**extra_query, **fields["query"]}
        meta = ClipMeta(clip_id=self.clip_id, size=self.size, crc32c=crc32c_b64(self._crc), **fields)
        meta = await asyncio.to_thread(self._store.make_durable, self._dir, self._file, meta, self._span_reader)
        self._committed = True
        self._on_durable(meta)
        return meta

    def discard(self) -> None:
        """Remove what was received unless it was committed (on every exit path)."""
        self._file.close()
        if not self._committed:
            self._store.discard_incoming(self._dir)
