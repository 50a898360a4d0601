"""The ``watch`` table: since when the relay watches each camera for gaps."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from relay.ledger.clips import from_iso
from relay.ledger.schema import transaction
from relay.spool.clip import ledger_time


class Watch:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def since(self, camera: str, now: datetime) -> datetime:
        """The relay's first start with the camera configured (``now`` the first time it
        is asked). What happened before is not the relay's to know."""
        with transaction(self._db):
            self._db.execute("INSERT OR IGNORE INTO watch (camera, since) VALUES (?, ?)", (camera, ledger_time(now)))
        row = self._db.execute("SELECT since FROM watch WHERE camera = ?", (camera,)).fetchone()
        return from_iso(row[0])

    def get(self, camera: str) -> datetime | None:
        """Since when ``camera`` is watched; None if it is not yet."""
        row = self._db.execute("SELECT since FROM watch WHERE camera = ?", (camera,)).fetchone()
        return from_iso(row[0]) if row else None

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM watch").fetchone()[0])

    def start_at(self, camera: str, since: datetime) -> None:
        """Watch ``camera`` from ``since`` (a new gateway seeded from S3: the time since
        the bucket's earliest footage of it in the lookback), unless it is watched already."""
        with transaction(self._db):
            self._db.execute("INSERT OR IGNORE INTO watch (camera, since) VALUES (?, ?)", (camera, ledger_time(since)))
