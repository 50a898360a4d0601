"""The spool on disk: the only copy of a clip until the destination has it.

Layout under the spool root, one directory per clip::

    incoming/<clip_id>/{data,meta.json}    being received; removed at start-up
    queue/<clip_id>/{data,meta.json}       acknowledged to the device; to upload
              [upload.json]                multipart progress, for resuming
    quarantine/<clip_id>/{...,reason.json} needs an operator; never uploaded as is
    trash/<clip_id>/                       delivered or evicted; being deleted

A clip becomes durable in one step, the rename of its directory from incoming/ to
queue/, after both files and the directory itself were fsynced; the queue directory
is fsynced before the device gets its answer. It leaves queue/ in one step too, a
rename to quarantine/ or trash/, so a crash never leaves a half-deleted clip in the
queue for start-up to mistake for a damaged one.

Everything here is synchronous disk work on one clip directory at a time, safe to run
in worker threads and from the CLI. It keeps no memory of which clips exist: that is
the upload queue's (``relay.spool.queue``), which only the event loop touches.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from relay import crashpoints
from relay.spool.clip import ClipMeta
from relay.spool.progress import UploadProgress
from relay.spool.timing import ClipTimes

log = structlog.get_logger("relay.spool")

DATA = "data"
META = "meta.json"
UPLOAD_STATE = "upload.json"
REASON = "reason.json"
ATTEMPTS = "attempts"  # failed upload attempts so far, so the count goes on after a restart

StoredState = Literal["queued", "quarantined"]

# Works out a clip's footage span from its data file and metadata (relay.spool.timing).
SpanReader = Callable[[Path, ClipMeta], ClipTimes]


def _with_span(meta: ClipMeta, data: Path, span_reader: SpanReader) -> ClipMeta:
    try:
        times = span_reader(data, meta)
    except Exception as exc:  # a clip is never refused or lost over its time stamps
        log.warning("clip_times_unknown", clip_id=meta.clip_id, error=repr(exc))
        return meta
    return dataclasses.replace(
        meta,
        starts_at=times.starts_at.isoformat(),
        ends_at=times.ends_at.isoformat(),
        starts_source=times.starts_source,
        ends_source=times.ends_source,
    )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass(frozen=True)
class Scan:
    """What a look at queue/ found among the clips the caller did not know yet."""

    good: list[ClipMeta] = field(default_factory=list)  # oldest first
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (clip id, reason)


@dataclass(frozen=True)
class StoredClip:
    """One clip directory as an operator sees it."""

    state: StoredState
    clip_id: str
    meta: ClipMeta | None  # None when its metadata cannot be read
    reason: dict[str, Any]  # reason.json of a quarantined clip, else empty


class SpoolStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.incoming_dir = root / "incoming"
        self.queue_dir = root / "queue"
        self.quarantine_dir = root / "quarantine"
        self.trash_dir = root / "trash"

    # ----- start-up -------------------------------------------------------

    def prepare(self) -> None:
        """Create the layout and clear what a crash left half done: clips still being
        received (their device never got a 2xx) and clips half deleted."""
        for d in (self.root, self.incoming_dir, self.queue_dir, self.quarantine_dir, self.trash_dir):
            d.mkdir(parents=True, exist_ok=True)
        removed = self._empty(self.incoming_dir)
        if removed:
            log.info("spool_partial_removed", count=removed)
        self._empty(self.trash_dir)
        for entry in self.queue_dir.iterdir():
            if not entry.is_dir():
                # A stray file (e.g. an editor's) is not ours to delete; leave it, say so.
                log.warning("spool_stray_file", path=str(entry))

    @staticmethod
    def _empty(directory: Path) -> int:
        count = 0
        for entry in directory.iterdir():
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            count += 1
        if count:
            fsync_dir(directory)
        return count

    def scan(self, known: Collection[str]) -> Scan:
        """Check every clip directory in queue/ not in ``known``; quarantine those that
        cannot be trusted. Start-up and 'spool retry' adoption both come through here."""
        found = Scan()
        for entry in sorted(self.queue_dir.iterdir()):
            if entry.name in known or not entry.is_dir():
                continue
            checked = self._checked_meta(entry)
            if isinstance(checked, str):
                self.quarantine(entry.name, checked, detail={})
                found.quarantined.append((entry.name, checked))
            else:
                found.good.append(checked)
        return found

    def _checked_meta(self, clip_dir: Path) -> ClipMeta | str:
        """The clip's metadata if it matches the data on disk, else what is wrong."""
        try:
            meta = ClipMeta.from_json((clip_dir / META).read_bytes())
        except FileNotFoundError:
            return "metadata file is missing"
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            return f"metadata is unreadable: {exc}"
        try:
            size = (clip_dir / DATA).stat().st_size
        except FileNotFoundError:
            return "clip data file is missing"
        if size != meta.size or meta.clip_id != clip_dir.name:
            return f"clip data is {size} bytes but its metadata says {meta.size}"
        return meta

    # ----- ingest ---------------------------------------------------------

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def open_incoming(self, clip_id: str) -> tuple[Path, io.FileIO]:
        directory = self.incoming_dir / clip_id
        directory.mkdir()
        # Unbuffered: a full disk shows at the write that fills it, where the writer can
        # make room and write the block again, not later at a flush or at close.
        return directory, open(directory / DATA, "wb", buffering=0)

    def make_durable(
        self, directory: Path, data: io.FileIO, meta: ClipMeta, span_reader: SpanReader | None = None
    ) -> ClipMeta:
        """fsync the clip and its metadata (with the footage's span, where ``span_reader``
        tells it), then move it into queue/ in one rename."""
        data.flush()
        crashpoints.reached(crashpoints.INGEST_BEFORE_FSYNC)
        os.fsync(data.fileno())
        data.close()
        if span_reader is not None:
            meta = _with_span(meta, directory / DATA, span_reader)
        write_file_durably(directory / META, meta.to_json())
        os.rename(directory, self.queue_dir / meta.clip_id)
        fsync_dir(self.queue_dir)
        fsync_dir(self.incoming_dir)
        return meta

    def discard_incoming(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    # ----- upload side ----------------------------------------------------

    def exists(self, clip_id: str) -> bool:
        return (self.queue_dir / clip_id).is_dir()

    def data_path(self, clip_id: str) -> Path:
        return self.queue_dir / clip_id / DATA

    def meta(self, clip_id: str) -> ClipMeta:
        return ClipMeta.from_json((self.queue_dir / clip_id / META).read_bytes())

    def attempts(self, clip_id: str) -> int:
        """Failed upload attempts before this start (0 when none, or unreadable)."""
        try:
            return max(0, int((self.queue_dir / clip_id / ATTEMPTS).read_text()))
        except (OSError, ValueError):
            return 0

    def note_attempts(self, clip_id: str, count: int) -> None:
        """Only a count for the log: replaced in one rename, not fsynced (a lost one costs
        nothing but a lower number)."""
        directory = self.queue_dir / clip_id
        if not directory.is_dir():
            return
        temporary = directory / f".{ATTEMPTS}.tmp"
        temporary.write_text(str(count))
        os.replace(temporary, directory / ATTEMPTS)

    def load_upload_state(self, clip_id: str) -> UploadProgress | None:
        try:
            data = json.loads((self.queue_dir / clip_id / UPLOAD_STATE).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            data = None
        progress = UploadProgress.from_json(data)
        if progress is None:
            # A torn state file only costs a restart of the upload, never the clip.
            log.warning("upload_state_unreadable", clip_id=clip_id)
        return progress

    def save_upload_state(self, clip_id: str, progress: UploadProgress | None) -> None:
        path = self.queue_dir / clip_id / UPLOAD_STATE
        if progress is None:
            path.unlink(missing_ok=True)
        else:
            write_file_durably(path, json.dumps(progress.to_json()).encode())

    def upload_ids_in_use(self, but: str) -> set[str]:
        """The multipart upload ids that clips other than ``but`` have saved."""
        held = set()
        for state_file in self.queue_dir.glob(f"*/{UPLOAD_STATE}"):
            progress = self.load_upload_state(state_file.parent.name) if state_file.parent.name != but else None
            if progress is not None and progress.upload_id is not None:
                held.add(progress.upload_id)
        return held

    def remove(self, clip_id: str) -> None:
        """Delete a clip that was delivered or evicted: out of queue/ in one rename."""
        trashed = self.trash_dir / clip_id
        os.rename(self.queue_dir / clip_id, trashed)
        fsync_dir(self.queue_dir)
        (trashed / DATA).unlink(missing_ok=True)
        crashpoints.reached(crashpoints.UPLOAD_MID_REMOVE)
        shutil.rmtree(trashed, ignore_errors=True)

    def quarantine(self, clip_id: str, reason: str, detail: dict[str, Any]) -> dict[str, Any]:
        """Move a clip to quarantine/ with reason.json; returns what reason.json says."""
        source = self.queue_dir / clip_id
        record = {
            "reason": reason,
            "at": datetime.now(UTC).isoformat(),
            "fix": "fix the cause, then run 'axis-relay spool retry' to queue it again",
            **detail,
        }
        write_file_durably(source / REASON, json.dumps(record, indent=1).encode())
        os.rename(source, self.quarantine_dir / clip_id)
        fsync_dir(self.quarantine_dir)
        fsync_dir(self.queue_dir)
        log.error("clip_quarantined", clip_id=clip_id, path=str(self.quarantine_dir / clip_id), **record)
        return record

    def quarantined_count(self) -> int:
        try:
            return sum(1 for entry in self.quarantine_dir.iterdir() if entry.is_dir())
        except FileNotFoundError:
            return 0

    def quarantine_summary(self, since: float) -> tuple[int, float | None, str]:
        """Clips quarantined since ``since`` (epoch s), when the latest was, and its reason.
        A clip's directory is modified when reason.json is written into it, as it is moved."""
        recent, latest, latest_dir = 0, None, None
        try:
            entries = list(os.scandir(self.quarantine_dir))
        except FileNotFoundError:
            return 0, None, ""
        for entry in entries:
            try:
                at = entry.stat().st_mtime
            except OSError:
                continue  # taken back by `spool retry` or `discard` meanwhile
            if at >= since and entry.is_dir():
                recent += 1
                if latest is None or at > latest:
                    latest, latest_dir = at, entry.path
        reason = str(self._reason(Path(latest_dir)).get("reason", "")) if latest_dir else ""
        return recent, latest, reason

    def writable(self) -> bool:
        return os.access(self.queue_dir, os.W_OK)

    # ----- operator -------------------------------------------------------

    def entries(self) -> Iterator[StoredClip]:
        """Every clip on disk, queued then quarantined, each oldest first."""
        for state, d in (("queued", self.queue_dir), ("quarantined", self.quarantine_dir)):
            if not d.is_dir():
                continue
            for entry in sorted(d.iterdir()):
                if entry.is_dir():
                    yield StoredClip(state, entry.name, self._readable_meta(entry), self._reason(entry))  # type: ignore[arg-type]

    @staticmethod
    def _readable_meta(clip_dir: Path) -> ClipMeta | None:
        try:
            return ClipMeta.from_json((clip_dir / META).read_bytes())
        except (OSError, ValueError, TypeError, UnicodeDecodeError):
            return None

    @staticmethod
    def _reason(clip_dir: Path) -> dict[str, Any]:
        try:
            record = json.loads((clip_dir / REASON).read_bytes())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def discard_quarantined(self, clip_ids: Collection[str] = ()) -> list[StoredClip]:
        """Delete quarantined clips (these, or all): an operator's decision, for footage
        that will never be delivered. Returns what was deleted."""
        removed = []
        for clip in [c for c in self.entries() if c.state == "quarantined"]:
            if clip_ids and clip.clip_id not in clip_ids:
                continue
            trashed = self.trash_dir / clip.clip_id
            os.rename(self.quarantine_dir / clip.clip_id, trashed)
            shutil.rmtree(trashed, ignore_errors=True)
            removed.append(clip)
        if removed:
            fsync_dir(self.quarantine_dir)
        return removed

    def retry_quarantined(self, clip_ids: Collection[str] = ()) -> list[str]:
        """Move quarantined clips back to queue/, where a running relay adopts them."""
        moved = []
        for entry in sorted(self.quarantine_dir.iterdir()):
            if clip_ids and entry.name not in clip_ids:
                continue
            (entry / REASON).unlink(missing_ok=True)
            os.rename(entry, self.queue_dir / entry.name)
            moved.append(entry.name)
        if moved:
            fsync_dir(self.queue_dir)
            fsync_dir(self.quarantine_dir)
        return moved
