"""One open ledger file, and its tables: ``clips``, ``gaps``, ``watch``.

Used from one thread at a time (the writer's, or a CLI command's). No connection
leaves this package: callers get the tables' typed records.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from relay.ledger.clips import Clips, Statement
from relay.ledger.gaps import Gaps
from relay.ledger.schema import LedgerUnusable, connect, connect_readonly, transaction
from relay.ledger.watch import Watch

log = structlog.get_logger("relay.ledger")


class Ledger:
    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self.clips = Clips(connection)
        self.gaps = Gaps(connection)
        self.watch = Watch(connection)

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Open (creating or migrating) the ledger; LedgerUnusable if it cannot be used."""
        return cls(connect(path), path)

    @classmethod
    def open_or_recreate(cls, path: Path) -> Ledger:
        """As ``open``; a corrupt or unreadable file is moved aside and recreated, with an
        error line: the relay never crash-loops over its history."""
        try:
            return cls.open(path)
        except LedgerUnusable as exc:
            aside = path.with_name(f"{path.name}.unusable-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
            log.error(
                "ledger_recreated",
                path=str(path),
                moved_to=str(aside),
                error=str(exc),
                fix="nothing to do for the relay; the old file is kept for inspection",
            )
            return cls.open(path)

    @classmethod
    def open_readonly(cls, path: Path) -> Ledger:
        """For reading beside a running relay (the CLI); FileNotFoundError if there is none."""
        return cls(connect_readonly(path), path)

    def close(self) -> None:
        self._db.close()

    def apply(self, notes: Sequence[Statement]) -> None:
        """The writer's batch of notes, in one transaction."""
        with transaction(self._db):
            for sql, params in notes:
                self._db.execute(sql, params)

    def prune(self, retention_days: int) -> int:
        """Clips older than the retention, and the settled gaps that ended as long ago."""
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        with transaction(self._db):
            return self.clips.prune(cutoff) + self.gaps.prune(cutoff)
