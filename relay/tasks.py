"""The relay's long-lived tasks, with one owner.

Every task started here runs until the relay stops it: one that returns or raises
first is a bug (a worker that died, a loop that fell out), and the relay must not go on
accepting clips it will never upload. So the owner logs it (``relay_task_ended``, with
the task's name and what ended it) and ``failed()`` returns at once; ``serve()`` then
stops the relay with RelayFailed, exit 1, and systemd restarts it.
Closing cancels every task, the newest first, and waits for each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any

import structlog

log = structlog.get_logger("relay")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait until each has ended (whatever it ended with)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class TaskOwner:
    """Starts the relay's long-lived tasks by name, watches that none ends, stops them all."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._may_return: set[str] = set()
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._closing = False

    def start(self, name: str, work: Coroutine[Any, Any, None], *, may_return: bool = False) -> asyncio.Task[None]:
        """``may_return``: a task that can finish its job early without harm (back-fill
        with no ledger to read); it may still not raise."""
        task = asyncio.create_task(work, name=name)
        self._tasks[name] = task
        if may_return:
            self._may_return.add(name)
        task.add_done_callback(self._done)
        return task

    def stopping(self) -> None:
        """Shutdown began: tasks ending from here on (workers finishing) are expected."""
        self._closing = True

    def alive(self, name: str) -> bool:
        return name in self._tasks and not self._tasks[name].done()

    async def failed(self) -> str:
        """Returns (what ended and why) once a task ends on its own; never while all run."""
        return await asyncio.shield(self._ended)

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._closing or self._ended.done():
            return
        if task.cancelled():
            why = "was cancelled"
        elif (exc := task.exception()) is not None:
            why = f"raised {exc!r}"
        elif task.get_name() in self._may_return:
            log.info("relay_task_finished", task=task.get_name())
            return
        else:
            why = "returned"
        log.error("relay_task_ended", task=task.get_name(), why=why)
        self._ended.set_result(f"relay task {task.get_name()} {why} before shutdown")

    async def close(self) -> None:
        self._closing = True
        for task in reversed(list(self._tasks.values())):
            await cancel_and_wait([task])
        if not self._ended.done():
            self._ended.cancel()

    @classmethod
    @contextlib.asynccontextmanager
    async def owning(cls) -> AsyncIterator[TaskOwner]:
        owner = cls()
        try:
            yield owner
        finally:
            await owner.close()
