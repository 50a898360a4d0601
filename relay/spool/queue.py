"""Which clips wait for upload, in what order, and who holds each: owned by the event loop.

Only code running on the loop touches this object. Disk work happens in threads that
return facts (``relay.spool.spool``), and the loop applies them here, so the counts need
no lock and cannot tear, and the order of events is the loop's.

A clip is *known* from the moment it is admitted until it is forgotten (delivered,
quarantined, evicted). While known it is either pending (waiting for a worker) or held:
by an upload worker, or by the eviction that is deleting it. A held clip is never
handed to anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Iterator
from typing import Literal

Holder = Literal["upload", "evict"]


class UploadQueue:
    def __init__(self) -> None:
        self._sizes: dict[str, int] = {}
        # Clip ids sort by arrival, so a heap of ids hands out the oldest first. Entries
        # of clips forgotten or held meanwhile are skipped when they come up.
        self._pending: list[str] = []
        self._held: dict[str, Holder] = {}
        self._ready = asyncio.Event()
        self._closed = False
        self._forget_watchers: list[set[str]] = []
        self.clips = 0
        self.bytes = 0

    def __contains__(self, clip_id: object) -> bool:
        return clip_id in self._sizes

    def known(self) -> frozenset[str]:
        return frozenset(self._sizes)

    def admit(self, clip_id: str, size: int) -> bool:
        """Count a clip and queue it; False (nothing changes) if it is known already."""
        if clip_id in self._sizes:
            return False
        self._sizes[clip_id] = size
        self.clips += 1
        self.bytes += size
        self._push(clip_id)
        return True

    def _push(self, clip_id: str) -> None:
        if clip_id in self._sizes and clip_id not in self._held:
            heapq.heappush(self._pending, clip_id)
            self._ready.set()

    async def claim(self) -> str | None:
        """The oldest pending clip, now held for upload; None once the queue is closed."""
        while not self._closed:
            while self._pending:
                clip_id = heapq.heappop(self._pending)
                if clip_id in self._sizes and clip_id not in self._held:
                    self._held[clip_id] = "upload"
                    return clip_id
            self._ready.clear()
            await self._ready.wait()
        return None

    def release(self, clip_id: str, *, after_s: float = 0.0) -> None:
        """Give a held clip back; it is pending again now, or after ``after_s`` seconds."""
        self._held.pop(clip_id, None)
        if after_s > 0:
            asyncio.get_running_loop().call_later(after_s, self._push, clip_id)
        else:
            self._push(clip_id)

    def next_victim(self) -> tuple[str, int] | None:
        """The oldest clip no worker holds, now held for eviction; None if there is none."""
        for clip_id in sorted(self._sizes):
            if clip_id not in self._held:
                self._held[clip_id] = "evict"
                return clip_id, self._sizes[clip_id]
        return None

    def forget(self, clip_id: str) -> None:
        """The clip left the spool (delivered, quarantined, evicted)."""
        self._held.pop(clip_id, None)
        size = self._sizes.pop(clip_id, None)
        if size is not None:
            self.clips -= 1
            self.bytes -= size
            for watcher in self._forget_watchers:
                watcher.add(clip_id)

    @contextlib.contextmanager
    def watching_forgets(self) -> Iterator[set[str]]:
        """The ids forgotten while the block runs. A scan of the disk that started before
        a clip was delivered must not bring that clip back when its result arrives."""
        forgotten: set[str] = set()
        self._forget_watchers.append(forgotten)
        try:
            yield forgotten
        finally:
            self._forget_watchers.remove(forgotten)

    def held_by(self, holder: Holder) -> set[str]:
        return {clip_id for clip_id, by in self._held.items() if by == holder}

    def oldest(self) -> str | None:
        return min(self._sizes) if self._sizes else None

    def close(self) -> None:
        """Hand out no more clips (shutdown); workers waiting in ``claim`` get None."""
        self._closed = True
        self._ready.set()
