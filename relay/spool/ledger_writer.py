"""Notes to the ledger from the running relay: taken on the event loop without ever
blocking it, written in batches by one thread of its own.

Every note is a single statement and a batch is one transaction, so a crash loses at
most the notes not yet written, never half of one. While the file cannot be written
(disk full, I/O errors) notes wait in memory, up to a bound, and are retried; a file
that goes bad under the relay is moved aside and a new one started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from relay.spool.clip import ClipMeta
from relay.spool.ledger import INSERT, Ledger, LedgerUnusable, Statement, now, row
from relay.spool.store import StoredClip
from relay.tasks import cancel_and_wait

log = structlog.get_logger("relay.ledger")
T = TypeVar("T")

# Pending notes kept in memory while the ledger cannot be written (disk full, say);
# past this the oldest are dropped with an error line: history, never clips.
MAX_BACKLOG = 50_000
PRUNE_EVERY_S = 3600.0


class LedgerWriter:
    """Takes notes from the event loop without blocking it and writes them in batches,
    in one thread of its own. Every note is a single statement; a batch is one
    transaction, so a crash loses at most the notes not yet written, never half one."""

    def __init__(self, path: Path, retention_days: int) -> None:
        self.path = path
        self._retention_days = retention_days
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._ledger: Ledger | None = None
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
        await writer._call(writer._open)
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

    async def _call(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _open(self) -> None:
        try:
            self._ledger = Ledger.open_or_recreate(self.path)
        except (OSError, sqlite3.Error, LedgerUnusable) as exc:
            # No history is better than no relay: clips still flow, and the next start tries again.
            log.error("ledger_unavailable", path=str(self.path), error=str(exc), fix="check the file's directory")
            self.failing_since, self.failure = time.time(), f"cannot be opened: {exc}"
            return
        self._prune()

    def _close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def _prune(self) -> None:
        if self._ledger is None:
            return
        try:
            pruned = self._ledger.prune(self._retention_days)
        except sqlite3.Error as exc:
            log.warning("ledger_prune_failed", error=str(exc))
            return
        if pruned:
            log.info("ledger_pruned", rows=pruned, retention_days=self._retention_days)

    async def reconcile(self, in_spool: list[StoredClip]) -> None:
        """Add what the spool holds and the ledger lacks (start-up)."""
        if self._ledger is None:
            return
        try:
            added = await self._call(self._ledger.reconcile, in_spool)
        except sqlite3.Error as exc:
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

        result: T | None = await self._call(on_thread)
        return result

    # ----- notes, from the event loop ------------------------------------

    def _note(self, sql: str, params: dict[str, Any]) -> None:
        if len(self._backlog) >= MAX_BACKLOG:
            del self._backlog[0]
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("ledger_notes_dropped", count=self.dropped, backlog=MAX_BACKLOG)
        self._backlog.append((sql, params))
        self._idle.clear()
        self._wake.set()

    def received(self, meta: ClipMeta) -> None:
        self._note(INSERT + " ON CONFLICT (clip_id) DO NOTHING", row(meta, "queued"))

    def requeued(self, meta: ClipMeta) -> None:
        """Back in the queue (an operator's 'spool retry'), or found there at start."""
        self._note(
            INSERT + " ON CONFLICT (clip_id) DO UPDATE SET state = 'queued', reason = NULL, quarantined_at = NULL",
            row(meta, "queued"),
        )

    def uploaded(self, clip_id: str, key: str | None, route: str) -> None:
        self._note(
            "UPDATE clip SET state = 'uploaded', uploaded_at = :at, key = :key, route = :route, reason = NULL "
            "WHERE clip_id = :clip_id",
            {"clip_id": clip_id, "at": now(), "key": key, "route": route},
        )

    def quarantined(self, clip_id: str, reason: str) -> None:
        self._note(
            "UPDATE clip SET state = 'quarantined', quarantined_at = :at, reason = :reason WHERE clip_id = :clip_id",
            {"clip_id": clip_id, "at": now(), "reason": reason},
        )

    def evicted(self, clip_id: str) -> None:
        self._note(
            "UPDATE clip SET state = 'evicted', reason = 'evicted to make room (spool.full_policy)' "
            "WHERE clip_id = :clip_id",
            {"clip_id": clip_id},
        )

    # ----- the writing thread --------------------------------------------

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
                await self._call(self._write, batch)
            except Exception as exc:
                # Keep the notes (disk full, I/O error, a ledger that could not be
                # recreated) and try again, a little later each time: this task never dies.
                self._backlog[:0] = batch[-MAX_BACKLOG:]
                failures += 1
                if failures == 1:
                    log.error("ledger_write_failed", error=str(exc), pending=len(self._backlog))
                    self.failing_since, self.failure = time.time(), f"cannot be written: {exc}"
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            if failures:
                log.info("ledger_write_recovered", after_failures=failures)
                failures = 0
            if self._ledger is not None:
                self.failing_since = None
            self.written += len(batch)
            if time.monotonic() - last_prune > PRUNE_EVERY_S:
                last_prune = time.monotonic()
                await self._call(self._prune)

    def _write(self, batch: list[Statement]) -> None:
        if self._ledger is None:
            return
        try:
            self._ledger.apply(batch)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise  # disk full, I/O, locked: passes; retried
            # The file went bad under us: start a fresh one; this batch's notes are lost.
            log.error("ledger_damaged", error=str(exc))
            self._ledger.close()
            self._ledger = None
            self._open()
