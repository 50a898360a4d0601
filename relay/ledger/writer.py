"""Notes to the ledger from the running relay: taken on the event loop without ever
blocking it, written in batches by one thread of its own.

Every note is a single statement and a batch is one transaction, so a crash loses at
most the notes not yet written, never half of one. While the file cannot be written
(disk full, I/O errors) notes wait in memory, up to a bound, and are retried; a file
that goes bad under the relay is moved aside and a new one started.

The open ``Ledger`` lives on the writer's thread and is touched only there: every
reader (back-fill, the status page, start-up's reconcile) goes through ``run``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog

from relay.backoff import Backoff
from relay.ledger import clips
from relay.ledger.clips import Statement
from relay.ledger.file import Ledger
from relay.ledger.schema import LedgerError, LedgerUnusable
from relay.spool.clip import ClipMeta
from relay.spool.store import StoredClip
from relay.tasks import cancel_and_wait

log = structlog.get_logger("relay.ledger")
T = TypeVar("T")

# Pending notes kept in memory while the ledger cannot be written (disk full, say);
# past this the oldest are dropped with an error line: history, never clips.
MAX_BACKLOG = 50_000
PRUNE_EVERY_S = 3600.0
# Between attempts to write while the file fails: 1 s, 2 s, ... up to 30 s.
RETRY = Backoff(initial_s=1.0, max_s=30.0)


class LedgerWriter:
    def __init__(self, path: Path, retention_days: int) -> None:
        self.path = path
        self._retention_days = retention_days
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        # On the ledger's thread only: the open file, or why there is none.
        self._ledger: Ledger | None = None
        self._missing = ""
        self._backlog: list[Statement] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.dropped = 0
        self.written = 0
        # Since when notes cannot be written (for health), and why; None while they can.
        self.failing_since: float | None = None
        self.failure = ""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, path: Path, retention_days: int) -> AsyncIterator[LedgerWriter]:
        writer = cls(path, retention_days)
        if (missing := await writer._call(writer._open)) is not None:
            writer._failing(missing)
        task = asyncio.create_task(writer._write_forever(), name="ledger-writer")
        try:
            yield writer
        finally:
            # What was noted before shutdown is written before the ledger closes.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await writer.flushed()
            await cancel_and_wait([task])
            await writer._call(writer._close)
            writer._thread.shutdown(wait=True)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _failing(self, why: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.time()
        self.failure = why

    # ----- on the ledger's thread ------------------------------------------

    def _open(self) -> str | None:
        """Open the file; None, or why it cannot be (the relay goes on without history)."""
        try:
            self._ledger = Ledger.open_or_recreate(self.path)
        except (OSError, LedgerError, LedgerUnusable) as exc:
            # No history is better than no relay: clips still flow, and the next start tries again.
            log.error("ledger_unavailable", path=str(self.path), error=str(exc), fix="check the file's directory")
            self._missing = f"cannot be opened: {exc}"
            return self._missing
        self._prune()
        return None

    def _close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def _prune(self) -> None:
        if self._ledger is None:
            return
        try:
            pruned = self._ledger.prune(self._retention_days)
        except LedgerError as exc:
            log.warning("ledger_prune_failed", error=str(exc))
            return
        if pruned:
            log.info("ledger_pruned", rows=pruned, retention_days=self._retention_days)

    def _write(self, batch: list[Statement]) -> str | None:
        """Write one batch; None, or why there is no ledger to write to (the batch is lost)."""
        if self._ledger is None:
            return self._missing
        try:
            self._ledger.apply(batch)
        except sqlite3.OperationalError:
            raise  # disk full, I/O, locked: passes; the batch is retried
        except sqlite3.DatabaseError as exc:
            # The file went bad under us: start a fresh one; this batch's notes are lost.
            log.error("ledger_damaged", error=str(exc))
            self._ledger.close()
            self._ledger = None
            return self._open()
        return None

    # ----- from the event loop ---------------------------------------------

    async def reconcile(self, in_spool: list[StoredClip]) -> None:
        """Add what the spool holds and the ledger lacks (start-up)."""
        try:
            added = await self.run(lambda ledger: ledger.clips.reconcile(in_spool))
        except LedgerError as exc:
            log.error("ledger_reconcile_failed", error=str(exc))
            return
        if added:
            log.info("ledger_reconciled", added=added)

    async def flushed(self) -> None:
        await self._idle.wait()

    async def run(self, work: Callable[[Ledger], T]) -> T | None:
        """Run ``work`` on the ledger's thread once every note so far is written (so it
        sees them); None when there is no ledger (it could not be opened)."""
        await self.flushed()

        def on_thread() -> T | None:
            return None if self._ledger is None else work(self._ledger)

        return await self._call(on_thread)

    def _note(self, statement: Statement) -> None:
        if len(self._backlog) >= MAX_BACKLOG:
            del self._backlog[0]
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("ledger_notes_dropped", count=self.dropped, backlog=MAX_BACKLOG)
        self._backlog.append(statement)
        self._idle.clear()
        self._wake.set()

    def received(self, meta: ClipMeta) -> None:
        self._note(clips.received(meta))

    def requeued(self, meta: ClipMeta) -> None:
        self._note(clips.requeued(meta))

    def uploaded(self, clip_id: str, key: str | None, route: str) -> None:
        self._note(clips.uploaded(clip_id, key, route, datetime.now(UTC)))

    def quarantined(self, clip_id: str, reason: str) -> None:
        self._note(clips.quarantined(clip_id, reason, datetime.now(UTC)))

    def evicted(self, clip_id: str) -> None:
        self._note(clips.evicted(clip_id))

    async def _write_forever(self) -> None:
        failures = 0
        last_prune = time.monotonic()
        while True:
            if not self._backlog:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            batch, self._backlog = self._backlog, []
            try:
                missing = await self._call(self._write, batch)
            except Exception as exc:
                # Keep the notes (disk full, I/O error, a ledger that could not be
                # recreated) and try again, a little later each time: this task never dies.
                self._backlog[:0] = batch[-MAX_BACKLOG:]
                failures += 1
                if failures == 1:
                    log.error("ledger_write_failed", error=str(exc), pending=len(self._backlog))
                    self._failing(f"cannot be written: {exc}")
                await asyncio.sleep(RETRY.delay(failures))
                continue
            if failures:
                log.info("ledger_write_recovered", after_failures=failures)
                failures = 0
            if missing is None:
                self.failing_since = None
            else:
                self._failing(missing)
            self.written += len(batch)
            if time.monotonic() - last_prune > PRUNE_EVERY_S:
                last_prune = time.monotonic()
                await self._call(self._prune)
