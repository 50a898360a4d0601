"""The ledger file's schema, its migrations, and how it is opened.

WAL and ``synchronous=FULL``; the schema carries a version (``PRAGMA user_version``)
and every change to it is a migration, applied in order at open, each in one
transaction with its version bump.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

# What callers catch: every error the file can give (full disk, I/O, locked, damaged).
LedgerError = sqlite3.Error


class LedgerUnusable(Exception):
    """The file is not a ledger this relay can use (corrupt, or from a newer release)."""


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
    # 3: when the audit (relay.coverage.audit) found a delivered clip's object gone from
    # S3; cleared when it is there again. Back-fill does not count such a clip as held.
    """
    ALTER TABLE clip ADD COLUMN missing_at TEXT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating) the file; LedgerUnusable if it cannot be used."""
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
    return db


def connect_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(path)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


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
