"""The clip ledger: every clip the relay accepted, and what became of it, in SQLite;
the gaps found in each camera's footage; since when each camera is watched.

The spool is the source of truth for clips still to deliver; the ledger remembers them
after they left, so that footage that never arrived can be found (per camera: which
time spans and sequence numbers arrived, when, and where they went).

- ``schema``: the tables, their migrations, opening the file (WAL, ``synchronous=FULL``).
- ``clips``, ``gaps``, ``watch``: one module per table, each owning its SQL and handing
  out typed records (as rq's registries each own their key). Renaming a column is a
  change in one module.
- ``file``: one open ledger (``Ledger``), with its tables as attributes.
- ``writer``: the running relay's notes, written in batches by one thread of its own,
  off the event loop and never on the path that answers a device: a slow or broken
  ledger delays history, never a clip.

Rows are kept ``ledger.retention_days`` and then pruned (never while queued). At
start-up, clips in the spool that are missing are added, and rows thought queued that
the spool no longer holds are marked ``unknown``. A corrupt or unreadable file is moved
aside and recreated, with an error log line: the relay never crash-loops over its history.
"""

from relay.ledger.clips import CameraDay, ClipRecord, InBucket, LedgerState
from relay.ledger.file import Ledger
from relay.ledger.gaps import GapRecord, GapState
from relay.ledger.schema import SCHEMA_VERSION, LedgerError, LedgerUnusable
from relay.ledger.writer import LedgerWriter

__all__ = [
    "SCHEMA_VERSION",
    "CameraDay",
    "ClipRecord",
    "GapRecord",
    "GapState",
    "InBucket",
    "Ledger",
    "LedgerError",
    "LedgerState",
    "LedgerUnusable",
    "LedgerWriter",
]
