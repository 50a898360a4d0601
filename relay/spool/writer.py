"""One clip streaming into the spool: its bytes written by the spool's write threads as
they arrive, its checksum taken on the way, and ``commit()`` making it durable.

What arrives from the socket is kept as the pieces it came in (no joining into a
buffer, no copy) and handed over in small batches to the write threads, which write
them with one ``writev``, extend the CRC32C, and every 256 KiB ask the kernel to start
writing them to disk. That last step keeps the final fsync short: without it, a
7.5 MB clip sat in the page cache until the device's last byte, and its answer waited
for all of it to reach the disk (bench/fleet.py: ack p50 14 ms with 32 cameras).

A batch is handed over and not waited for: the event loop learns of the writes only when
it asks (at commit, or when a clip runs too far ahead of its writes). Awaiting each
batch in a worker thread, as before, cost a thread hand-off and a wake-up of the loop
per batch: 10 % of the relay's GIL time with 32 cameras (py-spy), and the reason batches
were 256 KiB, which each connection held in memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import crc32c
import structlog

from relay import crashpoints
from relay.spool.clip import ClipMeta, crc32c_b64
from relay.spool.store import SpanReader, SpoolStore

log = structlog.get_logger("relay.spool")

# Bytes gathered from the socket before they go to the write threads: each connection
# holds at most this much (plus what is not written yet, bounded below).
# 64 KiB at a camera's 4 Mbit/s is a batch every eighth of a second.
WRITE_BATCH = 64 * 1024
# How far a clip's bytes may run ahead of the disk before its reader waits for its
# writes: the socket is then not read, so a slow disk slows the sender (TCP) instead of
# filling the relay's memory.
AHEAD_MAX = 2 * WRITE_BATCH
# Threads writing clips: as many as asyncio's default pool on a 4-core gateway, which
# wrote them before.
WRITE_THREADS = 8
# The disk is asked to start writing a clip's bytes once this many have been written
# since the last time: as often as when a batch was 256 KiB, so the fsync before the
# answer finds as little left as it did, with a quarter of the calls of one per batch.
WRITEBACK_EVERY = 256 * 1024
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


class WriteThreads:
    """The threads that write the clips' bytes. Each clip's writes are done in the order
    they were handed over, one at a time, by whichever thread is free: a write that
    stalls (``sync_file_range`` waited up to 0.2 s with 128 cameras while the disk took
    fsyncs) holds up only its own clip, whose reader then waits (``AHEAD_MAX``) while
    TCP slows its sender, as when each batch was awaited. A clip bound to one of a few
    fixed threads would wait behind every other clip's stall on that thread.

    A clip with work to do is one put on a queue the threads share: no future per
    batch, as a ThreadPoolExecutor's submit makes (which measured the same on the fleet
    bench, within its noise)."""

    def __init__(self, count: int) -> None:
        self._ready: queue.SimpleQueue[ClipLane | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"spool-writes-{n}", daemon=True) for n in range(count)
        ]

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, count: int = WRITE_THREADS) -> AsyncIterator[WriteThreads]:
        """Started here; on exit the jobs handed over are done before the threads end."""
        writes = cls(count)
        for thread in writes._threads:
            thread.start()
        try:
            yield writes
        finally:
            for _ in writes._threads:
                writes._ready.put(None)
            for thread in writes._threads:
                await asyncio.to_thread(thread.join)

    def lane(self) -> ClipLane:
        """The queue of a new clip's writes."""
        return ClipLane(self._ready)

    def _run(self) -> None:
        while (lane := self._ready.get()) is not None:
            lane.drain()


class ClipLane:
    """One clip's jobs: plain calls, done in order by one write thread at a time. Handing
    one over costs a lock and, when none of its jobs is waiting, a put on the threads'
    queue; nothing wakes the event loop when it is done."""

    def __init__(self, ready: queue.SimpleQueue[ClipLane | None]) -> None:
        self._ready = ready
        self._jobs: collections.deque[Callable[[], object]] = collections.deque()
        self._lock = threading.Lock()
        self._draining = False

    def put(self, job: Callable[[], object]) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._draining:
                return
            self._draining = True
        self._ready.put(self)

    async def reached(self) -> None:
        """Once every job handed over before this call is done."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.put(lambda: loop.call_soon_threadsafe(_settle, done))
        await done

    def drain(self) -> None:
        """In a write thread: this clip's jobs until none is left."""
        while True:
            with self._lock:
                if not self._jobs:
                    self._draining = False
                    return
                job = self._jobs.popleft()
            try:
                job()
            except Exception:  # a job reports its own failures; this one is a bug
                log.exception("spool_write_job_failed")


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():  # its waiter may have been cancelled
        done.set_result(None)


class ClipWriter:
    """Streams one clip into incoming/; ``commit()`` makes it durable and hands it on.

    Its bytes are written by the spool's write threads; the fsyncs run in worker
    threads; ``on_durable`` is called on the event loop once the clip is in queue/, so the
    caller's in-memory state is only ever changed by the loop.
    """

    def __init__(
        self,
        store: SpoolStore,
        writes: WriteThreads,
        clip_id: str,
        fields: dict[str, Any],
        on_durable: Callable[[ClipMeta], None],
        span_reader: SpanReader | None = None,
    ) -> None:
        self._store = store
        self._lane = writes.lane()
        self._span_reader = span_reader
        self.clip_id = clip_id
        self._fields = fields
        self._on_durable = on_durable
        self._dir, self._file = store.open_incoming(clip_id)
        self._committed = False
        self._pieces: list[bytes] = []
        self._batched = 0
        self._crc = 0
        self.size = 0  # bytes written to the file so far (set by its write thread)
        self.pending_size = 0  # bytes received so far, written or not
        self._written_back = 0  # bytes the disk was asked to start writing
        # Set by its write thread when a write failed; the pieces from then on are kept
        # (in order) for the loop to hand over again once it has made room.
        self._failure: Exception | None = None
        self._kept: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        """Take ``chunk``. Raises the OSError of a write that failed (a full disk): the
        caller may make room and call ``flush()``, which writes the same bytes again."""
        self._pieces.append(chunk)
        self._batched += len(chunk)
        self.pending_size += len(chunk)
        if self._batched >= WRITE_BATCH:
            self._hand_over()
            if self.pending_size - self.size > AHEAD_MAX:
                await self._lane.reached()
            self._raise_failure()
            crashpoints.reached(crashpoints.INGEST_MID_BODY)

    async def flush(self) -> None:
        """Write everything received, and wait for it. If the disk is full, the file is
        cut back to what was written before and the bytes kept, so the caller may make
        room and call again."""
        if self._failure is not None:
            # Once nothing of this clip is queued, take the kept pieces back, in order.
            await self._lane.reached()
            kept, self._kept, self._failure = self._kept, [], None
            self._pieces = kept + self._pieces
            self._batched += sum(len(piece) for piece in kept)
        self._hand_over()
        await self._lane.reached()
        self._raise_failure()

    def _hand_over(self) -> None:
        if not self._pieces:
            return
        pieces, length = self._pieces, self._batched
        self._pieces, self._batched = [], 0
        self._lane.put(lambda: self._write_pieces(pieces, length))

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure = self._failure
            if isinstance(failure, OSError):
                raise OSError(failure.errno, failure.strerror)
            raise failure

    def _write_pieces(self, pieces: list[bytes], length: int) -> None:
        """In a write thread."""
        if self._failure is not None:
            self._kept.extend(pieces)
            return
        fd = self._file.fileno()
        views: list[bytes | memoryview] = [p for p in pieces if p]
        done = 0  # pieces written whole; an index, so thousands of tiny ones stay linear
        try:
            while done < len(views):
                written = os.writev(fd, views[done : done + IOV_MAX])
                while done < len(views) and written >= len(views[done]):
                    written -= len(views[done])
                    done += 1
                if written:
                    views[done] = memoryview(views[done])[written:]
        except Exception as exc:
            failure: Exception = exc
            try:
                self._file.truncate(self.size)
                self._file.seek(self.size)
            except OSError as cut:
                failure = cut  # the file cannot be cut back: not a failure to write again
            self._failure = failure
            self._kept.extend(pieces)
            return
        crc = self._crc
        for piece in pieces:
            # Without letting go of the GIL: a 32 KiB piece takes 2 us, less than taking
            # the GIL back from the event loop would.
            crc = crc32c.crc32c(piece, crc, gil_release_mode=0)
        self._crc = crc
        self.size += length
        if self.size - self._written_back >= WRITEBACK_EVERY:
            start_writeback(fd, self._written_back, self.size - self._written_back)
            self._written_back = self.size

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

    async def close(self) -> None:
        """Remove what was received unless it was committed (on every exit path). Done by
        a write thread after the clip's writes, so it happens even if the caller is
        cancelled while waiting, and no write can reach a closed (or reused) descriptor."""
        if self._committed:
            return  # its file was closed when it was made durable
        self._pieces, self._batched = [], 0
        self._lane.put(self._discard)
        await asyncio.shield(self._lane.reached())

    def _discard(self) -> None:
        self._file.close()
        if not self._committed:
            self._store.discard_incoming(self._dir)
