"""The spool as the rest of the relay uses it: one owner for the clips' state.

``Spool`` runs on the event loop. It sends disk work to threads (``SpoolStore``),
applies what they report to the upload queue (``UploadQueue``), and notes each step
in the ledger. Ingest, the upload workers and the metrics go through its methods and
read-only properties; nothing outside reaches into the queue or the store's files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from relay.config import SpoolConfig
from relay.spool.clip import ClipMeta, ClipOrigin, Sender, clip_id_time, new_clip_id
from relay.spool.queue import UploadQueue
from relay.spool.store import SpanReader, SpoolStore
from relay.spool.writer import ClipWriter, WriteThreads

log = structlog.get_logger("relay.spool")


class ClipHistory(Protocol):
    """Where the spool reports what happens to each clip (the ledger)."""

    def received(self, meta: ClipMeta) -> None: ...
    def requeued(self, meta: ClipMeta) -> None: ...
    def uploaded(self, clip_id: str, key: str | None, route: str) -> None: ...
    def quarantined(self, clip_id: str, reason: str) -> None: ...
    def evicted(self, clip_id: str) -> None: ...


class Spool:
    def __init__(self, config: SpoolConfig, history: ClipHistory, writes: WriteThreads) -> None:
        self.store = SpoolStore(config.dir)
        self._writes = writes
        self.limits = config
        self._queue = UploadQueue()
        self._history = history
        # One decision about room at a time: two requests short of room must not both
        # evict, and two that fit alone must not both be told yes when only one fits.
        self._room = asyncio.Lock()
        # Room promised to clips being received, per writer: what is promised and not yet
        # on disk is kept for them, so concurrent uploads into a nearly full disk get
        # what fits, instead of all starting and all failing with ENOSPC.
        self._promised: dict[ClipWriter, int] = {}
        # Accepted, then deleted unsent to make room (spool.full_policy = "evict_oldest").
        self.evicted_clips = 0
        self.evicted_bytes = 0

    # ----- start-up and adoption -----------------------------------------

    async def recover(self) -> None:
        """Rebuild the queue from disk. Never raises for a bad clip: half-received ones
        are removed (their device never got a 2xx), untrustworthy ones quarantined."""
        await asyncio.to_thread(self.store.prepare)
        await self.adopt()
        log.info(
            "spool_recovered",
            queued=self._queue.clips,
            queued_bytes=self._queue.bytes,
            quarantined=self.store.quarantined_count(),
        )

    async def adopt(self) -> int:
        """Queue the clips in queue/ that the relay does not know: all of them at start,
        later those an operator put back with 'axis-relay spool retry'."""
        with self._queue.watching_forgets() as forgotten:
            scan = await asyncio.to_thread(self.store.scan, self._queue.known())
        adopted = 0
        for meta in scan.good:
            # Skip a clip that was committed, delivered and removed while the scan ran.
            if meta.clip_id not in forgotten and self._queue.admit(meta.clip_id, meta.size):
                self._history.requeued(meta)
                adopted += 1
        for clip_id, reason in scan.quarantined:
            self._history.quarantined(clip_id, reason)
        return adopted

    # ----- ingest ---------------------------------------------------------

    async def make_room(self, incoming: int, writer: ClipWriter | None = None) -> bool:
        """True when ``incoming`` more bytes fit the quota and the free-space floor,
        beside the room promised to other clips being received, evicting the oldest
        clips no worker holds first if the policy says so. The room is then promised to
        ``writer`` until it is committed or discarded."""
        async with self._room:
            while not await self._fits(incoming, writer):
                if self.limits.full_policy != "evict_oldest":
                    return False
                victim = self._queue.next_victim()
                if victim is None:
                    return False
                clip_id, size = victim
                try:
                    await asyncio.to_thread(self.store.remove, clip_id)
                except BaseException:
                    self._queue.release(clip_id)
                    raise
                self._queue.forget(clip_id)
                self._history.evicted(clip_id)
                self.evicted_clips += 1
                self.evicted_bytes += size
                log.warning("clip_evicted", clip_id=clip_id, bytes=size, policy="evict_oldest")
            if writer is not None:
                self._promised[writer] = self._promised.get(writer, 0) + incoming
            return True

    async def has_room(self, incoming: int) -> bool:
        """True when ``incoming`` more bytes fit without evicting anything (back-fill
        never evicts what a device sent to make room for what can wait on a card)."""
        return await self._fits(incoming)

    def _unwritten(self, but: ClipWriter | None = None) -> int:
        """Room promised to the other clips being received and not yet on disk."""
        return sum(max(0, room - w.size) for w, room in self._promised.items() if w is not but)

    async def _fits(self, incoming: int, writer: ClipWriter | None = None) -> bool:
        # spool.max_bytes counts the clips waiting, as before: a clip being received
        # joins it when it is acknowledged. The disk is another matter: what is promised
        # to clips still arriving will be written, so it is not free.
        if self.limits.max_bytes and self._queue.bytes + incoming > self.limits.max_bytes:
            return False
        free = await asyncio.to_thread(self.store.free_bytes)
        return free - self._unwritten(but=writer) - incoming >= self.limits.min_free_bytes

    @contextlib.asynccontextmanager
    async def receiving(
        self,
        sender: Sender,
        *,
        filename: str,
        content_type: str,
        span_reader: SpanReader | None = None,
        origin: ClipOrigin = "device",
    ) -> AsyncIterator[ClipWriter]:
        """A writer for one incoming clip (pushed by a device, or fetched back from its
        SD card); anything not committed is removed on exit. ``span_reader`` tells the
        footage's span when the clip is made durable."""
        now = datetime.now(UTC)
        fields: dict[str, Any] = dict(
            camera=sender.camera,
            filename=filename,
            content_type=content_type,
            received_at=now.isoformat(),
            query=sender.query,
            source=sender.source,
            origin=origin,
        )
        writer = await asyncio.to_thread(
            ClipWriter, self.store, self._writes, new_clip_id(now), fields, self._durable, span_reader
        )
        try:
            yield writer
        finally:
            self._promised.pop(writer, None)
            await writer.close()

    def _durable(self, meta: ClipMeta) -> None:
        self._queue.admit(meta.clip_id, meta.size)
        self._history.received(meta)

    # ----- upload side ----------------------------------------------------

    async def claim(self) -> str | None:
        """The oldest clip waiting, held for the caller; None once shutdown began."""
        return await self._queue.claim()

    def release(self, clip_id: str, *, after_s: float = 0.0) -> None:
        """Give back a claimed clip that was not delivered; it waits again."""
        self._queue.release(clip_id, after_s=after_s)

    async def delivered(self, clip_id: str, *, key: str | None, route: str) -> None:
        """The destination confirmed the clip: note it, then delete it from the spool."""
        self._history.uploaded(clip_id, key, route)
        await asyncio.to_thread(self.store.remove, clip_id)
        self._queue.forget(clip_id)

    async def vanished(self, clip_id: str) -> None:
        """A claimed clip whose metadata is gone: forget it if its directory is gone too
        (someone deleted it by hand); otherwise the read failed for another reason."""
        if await asyncio.to_thread(self.store.exists, clip_id):
            raise FileNotFoundError(f"{self.store.queue_dir / clip_id}: metadata file is missing")
        self._queue.forget(clip_id)
        log.warning("clip_vanished", clip_id=clip_id, path=str(self.store.queue_dir / clip_id))

    async def quarantine(self, clip_id: str, reason: str, detail: dict[str, Any]) -> None:
        await asyncio.to_thread(self.store.quarantine, clip_id, reason, detail)
        self._queue.forget(clip_id)
        self._history.quarantined(clip_id, reason)

    def close(self) -> None:
        """Shutdown began: hand out no more clips."""
        self._queue.close()

    # ----- what it holds, read-only ---------------------------------------

    @property
    def queued_clips(self) -> int:
        return self._queue.clips

    @property
    def queued_bytes(self) -> int:
        return self._queue.bytes

    @property
    def uploading(self) -> frozenset[str]:
        return frozenset(self._queue.held_by("upload"))

    def oldest_pending_at(self) -> datetime | None:
        """When the oldest clip still waiting for upload arrived (ids sort by arrival)."""
        oldest = self._queue.oldest()
        return clip_id_time(oldest) if oldest else None
