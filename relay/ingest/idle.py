"""The deadline on a device that stops sending mid-body.

One timer per idle period, not one per read: a clip streamed at real-time pace arrives
in some 30 reads a second per camera, and arming and cancelling a timer (the heap push
of ``asyncio.timeout``) around each was a measurable part of the relay's CPU with many
cameras (bench/fleet.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


class IdleDeadline:
    """Raises TimeoutError in the task when one ``waiting()`` lasts ``seconds``.

    Only time spent waiting for the sender counts: a slow disk write in between is the
    relay's delay, not the device's silence."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None
        self._expired = False

    def __enter__(self) -> IdleDeadline:
        self._task = asyncio.current_task()
        self._handle = self._loop.call_later(self._seconds, self._check)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
        ours = self._expired and kind is asyncio.CancelledError and self._task is not None
        # Our own cancellation becomes TimeoutError; anyone else's goes on as it came.
        if ours and self._task is not None and self._task.uncancel() == 0:
            raise TimeoutError from exc

    def waiting(self) -> None:
        self._waiting_since = self._loop.time()

    def arrived(self) -> None:
        self._waiting_since = None

    async def owed(self, pending: Awaitable[T]) -> T:
        """Await what the sender owes (a part, a field's bytes), as waiting time."""
        self.waiting()
        try:
            return await pending
        finally:
            self.arrived()

    def _check(self) -> None:
        now = self._loop.time()
        if self._waiting_since is not None and now - self._waiting_since >= self._seconds:
            self._expired = True
            if self._task is not None:
                self._task.cancel()
            return
        since = self._waiting_since if self._waiting_since is not None else now
        self._handle = self._loop.call_at(since + self._seconds, self._check)
