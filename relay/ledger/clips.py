"""The ``clip`` table: one row per clip the relay accepted, and what became of it.

The notes the running relay sends (received, uploaded, ...) are built here as single
statements and written by ``relay.ledger.writer``; everything else reads or changes
the table through ``Clips``, on the ledger's thread.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from relay.backfill.gaps import ClipSpan, Span
from relay.ledger.schema import transaction
from relay.spool.clip import ClipMeta, ledger_time, sequence_number
from relay.spool.store import StoredClip

LedgerState = Literal["queued", "uploaded", "quarantined", "evicted", "unknown"]
# One statement with its parameters: a note, written in the writer's next batch.
Statement = tuple[str, dict[str, Any]]
# Quarantine reasons kept per camera for the status page (the rest: `axis-relay spool list`).
REASONS_SHOWN = 3

_INSERT = (
    "INSERT INTO clip (clip_id, camera, filename, sequence, bytes, crc32c, received_at, source, origin, state, "
    "starts_at, ends_at, starts_source, ends_source) "
    "VALUES (:clip_id, :camera, :filename, :sequence, :bytes, :crc32c, :received_at, :source, :origin, :state, "
    ":starts_at, :ends_at, :starts_source, :ends_source)"
)


def from_iso(text: str) -> datetime:
    # fromisoformat (C) rather than strptime: detection parses thousands of these a round.
    return datetime.fromisoformat(text)


@dataclasses.dataclass(frozen=True)
class ClipRecord:
    """One row, as `axis-relay clips` shows it."""

    clip_id: str
    camera: str
    filename: str
    sequence: int | None
    bytes: int
    crc32c: str
    received_at: str
    source: str
    origin: str
    starts_at: str | None
    ends_at: str | None
    starts_source: str | None
    ends_source: str | None
    state: LedgerState
    uploaded_at: str | None
    key: str | None
    route: str | None
    quarantined_at: str | None
    reason: str | None
    missing_at: str | None = None  # when the audit found its object gone from S3

    @property
    def span(self) -> Span | None:
        """The footage's span, where the clip's times are known."""
        if self.starts_at is None or self.ends_at is None:
            return None
        return Span(from_iso(self.starts_at), from_iso(self.ends_at))


_COLUMNS = ", ".join(f.name for f in dataclasses.fields(ClipRecord))


@dataclasses.dataclass
class CameraDay:
    """A camera's line on the status page: today's clips and those still waiting."""

    camera: str
    today: int = 0
    waiting: int = 0
    quarantined: int = 0
    backfilled_today: int = 0
    last_received: str | None = None
    reasons: list[str] = dataclasses.field(default_factory=list)


def _row(meta: ClipMeta, state: LedgerState) -> dict[str, Any]:
    return {
        "clip_id": meta.clip_id,
        "camera": meta.camera,
        "filename": meta.filename,
        "sequence": sequence_number(meta.filename),
        "bytes": meta.size,
        "crc32c": meta.crc32c,
        "received_at": ledger_time(meta.received),
        "source": meta.source,
        "origin": meta.origin,
        "state": state,
        "starts_at": ledger_time(meta.starts) if meta.starts else None,
        "ends_at": ledger_time(meta.ends) if meta.ends else None,
        "starts_source": meta.starts_source,
        "ends_source": meta.ends_source,
    }


# ----- notes: one statement each, written in batches by the writer ----------


def received(meta: ClipMeta) -> Statement:
    return _INSERT + " ON CONFLICT (clip_id) DO NOTHING", _row(meta, "queued")


def requeued(meta: ClipMeta) -> Statement:
    """Back in the queue (an operator's 'spool retry'), or found there at start."""
    return (
        _INSERT + " ON CONFLICT (clip_id) DO UPDATE SET state = 'queued', reason = NULL, quarantined_at = NULL",
        _row(meta, "queued"),
    )


def uploaded(clip_id: str, key: str | None, route: str, at: datetime) -> Statement:
    return (
        "UPDATE clip SET state = 'uploaded', uploaded_at = :at, key = :key, route = :route, reason = NULL "
        "WHERE clip_id = :clip_id",
        {"clip_id": clip_id, "at": ledger_time(at), "key": key, "route": route},
    )


def quarantined(clip_id: str, reason: str, at: datetime) -> Statement:
    return (
        "UPDATE clip SET state = 'quarantined', quarantined_at = :at, reason = :reason WHERE clip_id = :clip_id",
        {"clip_id": clip_id, "at": ledger_time(at), "reason": reason},
    )


def evicted(clip_id: str) -> Statement:
    return (
        "UPDATE clip SET state = 'evicted', reason = 'evicted to make room (spool.full_policy)' "
        "WHERE clip_id = :clip_id",
        {"clip_id": clip_id},
    )


@dataclasses.dataclass(frozen=True)
class InBucket:
    """An object found in the bucket (relay.coverage), to seed an empty ledger with."""

    key: str
    size: int
    starts: datetime
    ends: datetime
    origin: str


class Clips:
    """The clip table, on the ledger's thread."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    # ----- changes ----------------------------------------------------------

    def discarded(self, clip_ids: Sequence[str]) -> None:
        """Quarantined clips an operator deleted (`axis-relay spool discard`): gone unsent,
        as an evicted clip is, with the reason said."""
        with transaction(self._db):
            self._db.executemany(
                "UPDATE clip SET state = 'evicted', reason = 'discarded from quarantine by an operator' "
                "WHERE clip_id = ?",
                [(c,) for c in clip_ids],
            )

    def reconcile(self, in_spool: Iterable[StoredClip]) -> int:
        """Make the table agree with the spool at start-up; returns the rows added."""
        before = self.count()
        held: list[str] = []
        with transaction(self._db):
            for clip in in_spool:
                held.append(clip.clip_id)
                if clip.meta is None:
                    continue  # unreadable metadata: nothing to record but its id
                if clip.state == "queued":
                    self._db.execute(*received(clip.meta))
                else:
                    self._db.execute(
                        _INSERT + " ON CONFLICT (clip_id) DO UPDATE SET state = 'quarantined', reason = :reason",
                        {**_row(clip.meta, "quarantined"), "reason": str(clip.reason.get("reason", ""))},
                    )
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS in_spool (clip_id TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM in_spool")
            self._db.executemany("INSERT OR IGNORE INTO in_spool VALUES (?)", ((i,) for i in held))
            self._db.execute(
                "UPDATE clip SET state = 'unknown', "
                "reason = 'left the spool before the ledger heard how (the relay stopped abruptly)' "
                "WHERE state = 'queued' AND clip_id NOT IN (SELECT clip_id FROM in_spool)"
            )
        return self.count() - before

    def seed(self, camera: str, found: Sequence[InBucket]) -> list[InBucket]:
        """Objects the bucket holds for ``camera``, as delivered clips: a new gateway's
        ledger learns what is already in S3, so gap detection sees the time the site had
        no relay and back-fill never fetches what S3 holds. Their id is 's3:<key>', their
        source 's3'. Returns those added (not those this relay uploaded itself)."""
        added = []
        with transaction(self._db):
            for obj in found:
                cursor = self._db.execute(
                    "INSERT INTO clip (clip_id, camera, filename, sequence, bytes, crc32c, received_at, source, "
                    "origin, state, starts_at, ends_at, starts_source, ends_source, uploaded_at, key, route) "
                    "SELECT ?, ?, ?, ?, ?, '', ?, 's3', ?, 'uploaded', ?, ?, 's3', 's3', ?, ?, 's3' "
                    # A clip this relay received itself while the bucket was read is known already.
                    "WHERE NOT EXISTS (SELECT 1 FROM clip WHERE key = ?) "
                    "ON CONFLICT (clip_id) DO NOTHING",
                    (
                        f"s3:{obj.key}",
                        camera,
                        obj.key.rsplit("/", 1)[-1],
                        sequence_number(obj.key.rsplit("/", 1)[-1]),
                        obj.size,
                        ledger_time(obj.ends),
                        obj.origin if obj.origin in ("device", "backfill") else "device",
                        ledger_time(obj.starts),
                        ledger_time(obj.ends),
                        ledger_time(obj.ends),
                        obj.key,
                        obj.key,
                    ),
                )
                if cursor.rowcount:
                    added.append(obj)
        return added

    def mark_missing(self, keys: Sequence[str], present: Sequence[str], at: datetime) -> None:
        """The audit's finding: objects of delivered clips gone from S3 (``keys``), and
        those found again (``present``)."""
        with transaction(self._db):
            self._db.executemany(
                "UPDATE clip SET missing_at = ? WHERE key = ? AND missing_at IS NULL",
                [(ledger_time(at), k) for k in keys],
            )
            self._db.executemany("UPDATE clip SET missing_at = NULL WHERE key = ?", [(k,) for k in present])

    def prune(self, cutoff: datetime) -> int:
        """Rows received before ``cutoff``, never one still queued; inside the caller's
        transaction."""
        cursor = self._db.execute(
            "DELETE FROM clip WHERE received_at < ? AND state != 'queued'", (ledger_time(cutoff),)
        )
        return cursor.rowcount

    # ----- reading ------------------------------------------------------------

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM clip").fetchone()[0])

    def find(self, *, camera: str | None = None, since: datetime | None = None) -> list[ClipRecord]:
        where, params = [], []
        if camera is not None:
            where.append("camera = ?")
            params.append(camera)
        if since is not None:
            where.append("received_at >= ?")
            params.append(ledger_time(since))
        sql = f"SELECT {_COLUMNS} FROM clip"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.execute(sql + " ORDER BY received_at, clip_id", params).fetchall()
        return [ClipRecord(*row) for row in rows]

    def overlapping(self, camera: str, span: Span) -> list[ClipRecord]:
        """The clips of ``camera`` whose footage overlaps ``span``, whenever they arrived
        (back-fill brings old footage late), by footage start."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM clip WHERE camera = ? AND starts_at < ? AND ends_at > ? ORDER BY starts_at",
            (camera, ledger_time(span.ends), ledger_time(span.starts)),
        ).fetchall()
        return [ClipRecord(*row) for row in rows]

    def spans(self, camera: str, since: datetime) -> list[ClipSpan]:
        """Every clip of ``camera`` whose footage ends after ``since``, oldest first."""
        return self._spans("", camera, since)

    def evicted_spans(self, camera: str, since: datetime) -> list[ClipSpan]:
        """Clips evicted unsent since ``since``: they can be old, and are few (an index)."""
        return self._spans("state = 'evicted' AND ", camera, since)

    def _spans(self, condition: str, camera: str, since: datetime) -> list[ClipSpan]:
        rows = self._db.execute(
            "SELECT starts_at, ends_at, sequence, origin, state FROM clip "
            f"WHERE {condition}camera = ? AND starts_at IS NOT NULL AND ends_at >= ? ORDER BY starts_at",
            (camera, ledger_time(since)),
        ).fetchall()
        return [ClipSpan(from_iso(s), from_iso(e), seq, origin, state) for s, e, seq, origin, state in rows]

    def queued_from(self) -> dict[str, str]:
        """Per camera, where the footage of its device clips still queued begins (the
        arrival, where the footage's start is not known): what a pair's peer must not
        back-fill yet, for this relay will upload it."""
        rows = self._db.execute(
            "SELECT camera, min(coalesce(starts_at, received_at)) FROM clip "
            "WHERE state = 'queued' AND origin = 'device' GROUP BY camera"
        ).fetchall()
        return {str(camera): str(at) for camera, at in rows}

    def backfilled(self, camera: str, span: Span) -> list[Span]:
        """The back-fill clips that already hold footage of ``span``."""
        rows = self._db.execute(
            "SELECT starts_at, ends_at FROM clip WHERE camera = ? AND origin = 'backfill' AND state != 'evicted' "
            "AND missing_at IS NULL AND starts_at < ? AND ends_at > ?",
            (camera, ledger_time(span.ends), ledger_time(span.starts)),
        ).fetchall()
        return [Span(from_iso(s), from_iso(e)) for s, e in rows]

    def by_minute(self, camera: str, since: datetime) -> dict[int, tuple[float, float, bool]]:
        """Minute (since ``since``) -> (seconds from the device, seconds back-filled,
        whether a clip starting then was found gone from S3), for the delivered clips of
        ``camera``: the status page's strip, summed in SQLite (a day is thousands of
        clips), each clip counted in the minute it starts."""
        rows = self._db.execute(
            # Milliseconds first, rounded: a start on a whole minute must not fall into the
            # minute before through julianday's floating point.
            "SELECT CAST(CAST((julianday(starts_at) - julianday(:since)) * 86400000 + 0.5 AS INTEGER) / 60000 "
            "AS INTEGER) AS minute, "
            "sum(CASE WHEN origin = 'device' THEN (julianday(ends_at) - julianday(starts_at)) * 86400 ELSE 0 END), "
            "sum(CASE WHEN origin = 'backfill' THEN (julianday(ends_at) - julianday(starts_at)) * 86400 ELSE 0 END), "
            "max(missing_at IS NOT NULL) "
            "FROM clip WHERE camera = :camera AND starts_at >= :since AND state IN ('uploaded', 'queued') "
            "GROUP BY minute",
            {"camera": camera, "since": ledger_time(since)},
        ).fetchall()
        return {int(m): (float(d or 0), float(b or 0), bool(x)) for m, d, b, x in rows}

    def by_camera(self, today: datetime) -> dict[str, CameraDay]:
        """Per camera: only today's rows and those still waiting or quarantined."""
        days: dict[str, CameraDay] = {}
        for camera, today_n, backfilled, last in self._db.execute(
            "SELECT camera, sum(origin = 'device'), sum(origin = 'backfill'), max(received_at) FROM clip "
            "WHERE received_at >= ? GROUP BY camera",
            (ledger_time(today),),
        ):
            days[camera] = CameraDay(camera, today=today_n, backfilled_today=backfilled, last_received=last)
        for camera, state, count in self._db.execute(
            "SELECT camera, state, count(*) FROM clip WHERE state IN ('queued', 'quarantined') GROUP BY camera, state"
        ):
            day = days.setdefault(camera, CameraDay(camera))
            if state == "queued":
                day.waiting = count
            else:
                day.quarantined = count
        for camera, reason in self._db.execute(
            "SELECT camera, reason FROM clip WHERE state = 'quarantined' ORDER BY quarantined_at DESC"
        ):
            day = days[camera]
            if len(day.reasons) < REASONS_SHOWN and reason and reason not in day.reasons:
                day.reasons.append(reason)
        return days
