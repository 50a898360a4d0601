"""The ``gap`` table: what was found missing, per camera, and what became of it.

A gap moves ``detected`` -> ``fetching`` -> ``filled``, or ``unfillable`` (no
recording covers it, no SD card, retention passed, no camera access configured), or
``retrying`` (the camera could not be asked; tried again at ``next_try_at``).
``fetched_until`` is how far its footage is safely in the spool, so a relay that
stops mid-gap goes on from there and never fetches a range twice.

On the ledger's own thread (``LedgerWriter.run``); every change is one transaction.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from relay.backfill.gaps import FoundGap, GapCause, Span
from relay.ledger.clips import from_iso
from relay.ledger.schema import transaction
from relay.spool.clip import ledger_time

GapState = Literal["detected", "fetching", "filled", "unfillable", "retrying"]
# A still-waiting silence gap is stretched, not joined by a new one, while a camera stays quiet.
EXTENDABLE = ("detected", "retrying")


@dataclasses.dataclass(frozen=True)
class GapRecord:
    gap_id: int
    camera: str
    starts_at: str
    ends_at: str
    cause: GapCause
    state: GapState
    found: str  # what showed it: the clips on either side, the silence
    reason: str  # why it is in its state now (the last error, what could not be had)
    detected_at: str
    updated_at: str
    attempts: int
    next_try_at: str | None
    fetched_until: str | None
    fetched_bytes: int
    missing_s: float

    @property
    def span(self) -> Span:
        return Span(from_iso(self.starts_at), from_iso(self.ends_at))

    @property
    def seconds(self) -> float:
        return self.span.seconds

    @property
    def resume_from(self) -> datetime:
        return from_iso(self.fetched_until) if self.fetched_until else self.span.starts


_SELECT = f"SELECT {', '.join(f.name for f in dataclasses.fields(GapRecord))} FROM gap"


class Gaps:
    """The gap table, on the ledger's thread."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    # ----- changes --------------------------------------------------------

    def record(self, camera: str, found: Sequence[FoundGap], now: datetime) -> list[GapRecord]:
        """Store new gaps (a silence gap that goes on stretches the waiting one); returns
        those created or stretched."""
        changed = []
        with transaction(self._db):
            for gap in found:
                if gap.cause == "silence":
                    row = self._db.execute(
                        f"{_SELECT} WHERE camera = ? AND cause = 'silence' AND ends_at = ? AND state IN {EXTENDABLE}",
                        (camera, ledger_time(gap.starts)),
                    ).fetchone()
                    if row is not None:
                        self._db.execute(
                            "UPDATE gap SET ends_at = ?, found = ?, updated_at = ? WHERE gap_id = ?",
                            (ledger_time(gap.ends), gap.reason, ledger_time(now), row[0]),
                        )
                        changed.append(row[0])
                        continue
                cursor = self._db.execute(
                    "INSERT INTO gap (camera, starts_at, ends_at, cause, state, found, reason, detected_at, "
                    "updated_at) VALUES (?, ?, ?, ?, 'detected', ?, ?, ?, ?)",
                    (
                        camera,
                        ledger_time(gap.starts),
                        ledger_time(gap.ends),
                        gap.cause,
                        gap.reason,
                        gap.reason,
                        ledger_time(now),
                        ledger_time(now),
                    ),
                )
                changed.append(int(cursor.lastrowid or 0))
        return [g for g in (self.get(i) for i in changed) if g is not None]

    def add_manual(self, camera: str, span: Span, now: datetime) -> GapRecord:
        """A range an operator asked for (`axis-relay backfill`)."""
        with transaction(self._db):
            cursor = self._db.execute(
                "INSERT INTO gap (camera, starts_at, ends_at, cause, state, found, reason, detected_at, updated_at) "
                "VALUES (?, ?, ?, 'manual', 'detected', 'asked for with axis-relay backfill', '', ?, ?)",
                (camera, ledger_time(span.starts), ledger_time(span.ends), ledger_time(now), ledger_time(now)),
            )
        gap = self.get(int(cursor.lastrowid or 0))
        assert gap is not None
        return gap

    def update(self, gap_id: int, state: GapState, now: datetime, **fields: object) -> GapRecord | None:
        allowed = {"reason", "attempts", "next_try_at", "fetched_until", "fetched_bytes", "missing_s"}
        assert set(fields) <= allowed, set(fields) - allowed
        values = {k: ledger_time(v) if isinstance(v, datetime) else v for k, v in fields.items()}
        sets = ", ".join(f"{k} = :{k}" for k in values)
        with transaction(self._db):
            self._db.execute(
                f"UPDATE gap SET state = :state, updated_at = :now{', ' + sets if sets else ''} WHERE gap_id = :id",
                {"state": state, "now": ledger_time(now), "id": gap_id, **values},
            )
        return self.get(gap_id)

    def interrupted(self, now: datetime) -> int:
        """At start-up: gaps the last run was fetching go on from ``fetched_until``."""
        with transaction(self._db):
            cursor = self._db.execute(
                "UPDATE gap SET state = 'retrying', next_try_at = NULL, updated_at = ?, "
                "reason = 'the relay stopped while fetching it' WHERE state = 'fetching'",
                (ledger_time(now),),
            )
        return cursor.rowcount

    def prune(self, cutoff: datetime) -> int:
        """Gaps that ended before ``cutoff`` and were settled; those still being worked on
        never go. Inside the caller's transaction."""
        cursor = self._db.execute(
            "DELETE FROM gap WHERE ends_at < ? AND state IN ('filled', 'unfillable')", (ledger_time(cutoff),)
        )
        return cursor.rowcount

    # ----- reading --------------------------------------------------------

    def get(self, gap_id: int) -> GapRecord | None:
        row = self._db.execute(f"{_SELECT} WHERE gap_id = ?", (gap_id,)).fetchone()
        return GapRecord(*row) if row else None

    def known(self, camera: str, since: datetime) -> list[Span]:
        """What detection already found (every cause but an operator's ask)."""
        rows = self._db.execute(
            "SELECT starts_at, ends_at FROM gap WHERE camera = ? AND ends_at >= ? AND cause != 'manual'",
            (camera, ledger_time(since)),
        ).fetchall()
        return [Span(from_iso(s), from_iso(e)) for s, e in rows]

    def due(self, camera: str, now: datetime) -> GapRecord | None:
        """The oldest gap to work on now (oldest first: the card deletes oldest first)."""
        row = self._db.execute(
            f"{_SELECT} WHERE camera = ? AND state IN ('detected', 'retrying') "
            "AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY starts_at LIMIT 1",
            (camera, ledger_time(now)),
        ).fetchone()
        return GapRecord(*row) if row else None

    def find(self, *, camera: str | None = None, since: datetime | None = None) -> list[GapRecord]:
        where, params = [], []
        if camera is not None:
            where.append("camera = ?")
            params.append(camera)
        if since is not None:
            where.append("ends_at >= ?")
            params.append(ledger_time(since))
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY starts_at, gap_id"
        return [GapRecord(*row) for row in self._db.execute(sql, params).fetchall()]

    def totals(self, since: datetime) -> dict[tuple[str, str], tuple[int, float]]:
        """(camera, state) -> (count, seconds) of the gaps that end after ``since``."""
        totals: dict[tuple[str, str], tuple[int, float]] = {}
        for gap in self.find(since=since):
            count, seconds = totals.get((gap.camera, gap.state), (0, 0.0))
            totals[(gap.camera, gap.state)] = (count + 1, seconds + gap.seconds)
        return totals

    def attention(self, overdue_before: datetime, unfillable_since: datetime) -> dict[str, tuple[int, int]]:
        """camera -> (gaps still open that were found before ``overdue_before``, gaps that
        became unfillable since ``unfillable_since``): what health calls degraded."""
        found: dict[str, tuple[int, int]] = {}
        for camera, overdue, unfillable in self._db.execute(
            "SELECT camera, sum(state IN ('detected', 'fetching', 'retrying') AND detected_at < ?), "
            "sum(state = 'unfillable' AND updated_at >= ?) FROM gap GROUP BY camera",
            (ledger_time(overdue_before), ledger_time(unfillable_since)),
        ):
            if overdue or unfillable:
                found[camera] = (int(overdue or 0), int(unfillable or 0))
        return found
