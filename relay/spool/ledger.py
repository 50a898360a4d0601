"""The clip ledger: every clip the relay accepted, and what became of it, in SQLite.

This module is the file: its schema, migrations, reconciliation, pruning and queries,
used from one thread at a time. The notes the running relay sends it come through
``relay.spool.ledger_writer``.

The spool is the source of truth for clips still to deliver; the ledger remembers them
after they left, so that footage that never arrived can be found (per camera: which
time spans and sequence numbers arrived, when, and where they went).

- One row per clip, kept ``ledger.retention_days`` and then pruned (never while queued).
- WAL and ``synchronous=FULL``; the schema carries a version (``PRAGMA user_version``)
  and every change to it is a migration, applied in order at open.
- Written only by ``LedgerWriter``, in one thread of its own, off the event loop and
  never on the path that answers a device: a slow or broken ledger delays history,
  never a clip.
- At start-up, clips in the spool that are missing from it are added, and rows it
  thinks queued that the spool no longer holds are marked ``unknown`` (the relay
  stopped before it heard how they left).
- A corrupt or unreadable file is moved aside and recreated, with an error log line:
  the relay never crash-loops over its history.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import structlog

from relay.spool.clip import ClipMeta, ledger_time, sequence_number
from relay.spool.store import StoredClip

log = structlog.get_logger("relay.ledger")

LedgerState = Literal["queued", "uploaded", "quarantined", "evicted", "unknown"]

# Migration N takes a ledger from user_version N-1 to N. Append; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE clip (
        clip_id        TEXT PRIMARY KEY,
        camera         TEXT NOT NULL,
        filename       TEXT NOT NULL,
        sequence       INTEGER,
        bytes          INTEGER NOT NULL,
        crc32c         TEXT NOT NULL,
        received_at    TEXT NOT NULL,
        source         TEXT NOT NULL DEFAULT '',
        origin         TEXT NOT NULL DEFAULT 'device' CHECK (origin IN ('device', 'backfill')),
        starts_at      TEXT,
        ends_at        TEXT,
        state          TEXT NOT NULL
                       CHECK (state IN ('queued', 'uploaded', 'quarantined', 'evicted', 'unknown')),
        uploaded_at    TEXT,
        key            TEXT,
        route          TEXT,
        quarantined_at TEXT,
        reason         TEXT
    );
    CREATE INDEX clip_by_camera ON clip (camera, received_at);
    CREATE INDEX clip_by_time ON clip (received_at);
    """,
    # 2: where each clip's start and end came from (relay.spool.timing), the gaps in each
    # camera's footage with what became of them, and since when each camera is watched
    # for gaps (relay.backfill).
    """
    ALTER TABLE clip ADD COLUMN starts_source TEXT;
    ALTER TABLE clip ADD COLUMN ends_source TEXT;
    CREATE INDEX clip_by_footage ON clip (camera, starts_at);
    CREATE INDEX clip_by_state ON clip (state);
    CREATE TABLE gap (
        gap_id         INTEGER PRIMARY KEY,
        camera         TEXT NOT NULL,
        starts_at      TEXT NOT NULL,
        ends_at        TEXT NOT NULL,
        cause          TEXT NOT NULL CHECK (cause IN ('coverage', 'silence', 'sequence', 'evicted', 'manual')),
        state          TEXT NOT NULL
                       CHECK (state IN ('detected', 'fetching', 'filled', 'unfillable', 'retrying')),
        found          TEXT NOT NULL DEFAULT '',
        reason         TEXT NOT NULL DEFAULT '',
        detected_at    TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        attempts       INTEGER NOT NULL DEFAULT 0,
        next_try_at    TEXT,
        fetched_until  TEXT,
        fetched_bytes  INTEGER NOT NULL DEFAULT 0,
        missing_s      REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX gap_by_camera ON gap (camera, starts_at);
    CREATE INDEX gap_by_state ON gap (state);
    CREATE TABLE watch (
        camera         TEXT PRIMARY KEY,
        since          TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


INSERT = (
    "INSERT INTO clip (clip_id, camera, filename, sequence, bytes, crc32c, received_at, source, origin, state, "
    "starts_at, ends_at, starts_source, ends_source) "
    "VALUES (:clip_id, :camera, :filename, :sequence, :bytes, :crc32c, :received_at, :source, :origin, :state, "
    ":starts_at, :ends_at, :starts_source, :ends_source)"
)

Statement = tuple[str, dict[str, Any]]


class LedgerUnusable(Exception):
    """The file is not a ledger this relay can use (corrupt, or from a newer release)."""


def row(meta: ClipMeta, state: LedgerState) -> dict[str, Any]:
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


def now() -> str:
    return ledger_time(datetime.now(UTC))


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


COLUMNS = [f.name for f in dataclasses.fields(ClipRecord)]


class Ledger:
    """Synchronous access to the ledger file; one instance is used by one thread at a time."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Open (creating or migrating) the ledger; LedgerUnusable if it cannot be used."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            if (check := db.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                raise LedgerUnusable(f"integrity check failed: {check}")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise LedgerUnusable(f"schema version {version} is newer than this relay's ({SCHEMA_VERSION})")
            for number in range(version + 1, SCHEMA_VERSION + 1):
                with transaction(db):
                    _run_script(db, MIGRATIONS[number - 1])
                    db.execute(f"PRAGMA user_version = {number}")
        except sqlite3.OperationalError:
            db.close()
            raise  # cannot open, locked, disk full: the file may be fine; never moved aside
        except sqlite3.DatabaseError as exc:
            db.close()
            raise LedgerUnusable(str(exc)) from exc  # "file is not a database", "malformed"
        except BaseException:
            db.close()
            raise
        return cls(db, path)

    @classmethod
    def open_or_recreate(cls, path: Path) -> Ledger:
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
        if not path.exists():
            raise FileNotFoundError(path)
        return cls(sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None), path)

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the modules that keep their own tables here (gaps)."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def apply(self, statements: Sequence[Statement]) -> None:
        with transaction(self._db):
            for sql, params in statements:
                self._db.execute(sql, params)

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
        """Make the ledger agree with the spool at start-up; returns the rows added."""
        before = self._count()
        held: list[str] = []
        with transaction(self._db):
            for clip in in_spool:
                held.append(clip.clip_id)
                if clip.meta is None:
                    continue  # unreadable metadata: nothing to record but its id
                if clip.state == "queued":
                    self._db.execute(INSERT + " ON CONFLICT (clip_id) DO NOTHING", row(clip.meta, "queued"))
                else:
                    self._db.execute(
                        INSERT + " ON CONFLICT (clip_id) DO UPDATE SET state = 'quarantined', reason = :reason",
                        {**row(clip.meta, "quarantined"), "reason": str(clip.reason.get("reason", ""))},
                    )
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS in_spool (clip_id TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM in_spool")
            self._db.executemany("INSERT OR IGNORE INTO in_spool VALUES (?)", ((i,) for i in held))
            self._db.execute(
                "UPDATE clip SET state = 'unknown', "
                "reason = 'left the spool before the ledger heard how (the relay stopped abruptly)' "
                "WHERE state = 'queued' AND clip_id NOT IN (SELECT clip_id FROM in_spool)"
            )
        return self._count() - before

    def _count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM clip").fetchone()[0])

    def prune(self, retention_days: int) -> int:
        cutoff = ledger_time(datetime.now(UTC) - timedelta(days=retention_days))
        with transaction(self._db):
            cursor = self._db.execute("DELETE FROM clip WHERE received_at < ? AND state != 'queued'", (cutoff,))
            # Gaps that ended as long ago and were settled go too; those still being
            # worked on never do.
            gaps = self._db.execute(
                "DELETE FROM gap WHERE ends_at < ? AND state IN ('filled', 'unfillable')", (cutoff,)
            )
        return cursor.rowcount + gaps.rowcount

    def clips(self, *, camera: str | None = None, since: datetime | None = None) -> list[ClipRecord]:
        where, params = [], []
        if camera is not None:
            where.append("camera = ?")
            params.append(camera)
        if since is not None:
            where.append("received_at >= ?")
            params.append(ledger_time(since))
        sql = f"SELECT {', '.join(COLUMNS)} FROM clip"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.execute(sql + " ORDER BY received_at, clip_id", params).fetchall()
        return [ClipRecord(*row) for row in rows]


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the open transaction; one statement at a time keeps
    # a migration and its version bump in one transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
