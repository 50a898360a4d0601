"""The durable local spool: the only copy of a clip until S3 has it.

Layout under the spool root, one directory per clip::

    incoming/<clip_id>/{data,meta.json}   being received; removed at start-up
    queue/<clip_id>/{data,meta.json}      acknowledged to the device; to upload
              [upload.json]               multipart progress, for resuming
    quarantine/<clip_id>/{...,reason.json} needs an operator; never uploaded as is

A clip becomes durable in one step, the rename of its directory from incoming/ to
queue/, after both files and the directory itself were fsynced; the queue directory
is fsynced before the device gets its answer. Everything the relay counts is
rebuilt from these directories at start-up, so nothing leaks across crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import crc32c
import structlog

from relay.config import SpoolConfig
from relay.ops import crashpoints
from relay.spool.clip import ClipMeta, Sender, clip_id_time, crc32c_b64, new_clip_id

log = structlog.get_logger("relay.spool")

DATA = "data"
META = "meta.json"
UPLOAD_STATE = "upload.json"
REASON = "reason.json"

# Bytes gathered from the socket before one write+checksum in a worker thread:
# large enough that thread hand-offs cost little, small enough to bound memory.
WRITE_BATCH = 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically: temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class ClipWriter:
    """Streams one clip into ``incoming/``; ``commit()`` makes it durable and queued."""

    def __init__(self, spool: Spool, clip_id: str, directory: Path, fields: dict[str, Any]) -> None:
        self._spool = spool
        self.clip_id = clip_id
        self._dir = directory
        self._fields = fields
        self._file = open(directory / DATA, "wb")  # noqa: SIM115 - closed by commit() or discard()
        self._buffer = bytearray()
        self._crc = 0
        self.size = 0  # bytes written to the file so far
        self.pending_size = 0  # bytes received so far, written or still buffered

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        self.pending_size += len(chunk)
        if len(self._buffer) >= WRITE_BATCH:
            await self._flush()
            crashpoints.reached(crashpoints.INGEST_MID_BODY)

    async def _flush(self) -> None:
        if not self._buffer:
            return
        block, self._buffer = bytes(self._buffer), bytearray()
        self._crc = await asyncio.to_thread(self._write_block, block, self._crc)
        self.size += len(block)

    def _write_block(self, block: bytes, crc: int) -> int:
        self._file.write(block)
        return crc32c.crc32c(block, crc)

    async def commit(self, extra_query: dict[str, str] | None = None) -> ClipMeta:
        await self._flush()
        fields = dict(self._fields)
        if extra_query:
            fields["query"] = {**extra_query, **fields["query"]}
        meta = ClipMeta(clip_id=self.clip_id, size=self.size, crc32c=crc32c_b64(self._crc), **fields)
        await asyncio.to_thread(self._make_durable, meta)
        self._spool._admit(meta)
        return meta

    def _make_durable(self, meta: ClipMeta) -> None:
        self._file.flush()
        crashpoints.reached(crashpoints.INGEST_BEFORE_FSYNC)
        os.fsync(self._file.fileno())
        self._file.close()
        _write_file_durably(self._dir / META, meta.to_json())
        target = self._spool.queue_dir / self.clip_id
        os.rename(self._dir, target)
        _fsync_dir(self._spool.queue_dir)
        _fsync_dir(self._spool.incoming_dir)
        self._dir = target

    def discard(self) -> None:
        self._file.close()
        if self._dir.parent == self._spool.incoming_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class SpoolCounts:
    clips: int = 0
    bytes: int = 0


class Spool:
    """Owns the spool directories and the in-memory order of clips to upload."""

    def __init__(self, root: Path, limits: SpoolConfig | None = None) -> None:
        self.root = root
        self.limits = limits or SpoolConfig(dir=root)
        # Clips an upload worker holds right now: never evicted from under it.
        self.uploading: set[str] = set()
        self.incoming_dir = root / "incoming"
        self.queue_dir = root / "queue"
        self.quarantine_dir = root / "quarantine"
        self.pending: asyncio.Queue[str] = asyncio.Queue()
        self.queued = SpoolCounts()
        self._sizes: dict[str, int] = {}

    # ----- start-up -------------------------------------------------------

    def recover(self) -> list[str]:
        """Rebuild state from disk; returns the clip ids to upload, oldest first.

        Never raises for a bad clip: a half-received clip is removed (its device never
        got a 2xx), a queued clip that cannot be trusted goes to quarantine.
        """
        for d in (self.root, self.incoming_dir, self.queue_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        removed = 0
        for entry in self.incoming_dir.iterdir():
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed += 1
        if removed:
            _fsync_dir(self.incoming_dir)
            log.info("spool_partial_removed", count=removed)
        for entry in self.queue_dir.iterdir():
            if not entry.is_dir():
                # A stray file (e.g. an editor's) is not ours to delete; leave it, say so.
                log.warning("spool_stray_file", path=str(entry))
        ready = self._admit_unknown()
        log.info(
            "spool_recovered",
            queued=self.queued.clips,
            queued_bytes=self.queued.bytes,
            quarantined=sum(1 for _ in self.quarantine_dir.iterdir()),
        )
        return ready

    def adopt_requeued(self) -> int:
        """Queue clips that appeared in queue/ behind our back ('axis-relay spool retry')."""
        adopted = self._admit_unknown()
        if adopted:
            log.info("spool_requeued_adopted", count=len(adopted))
        return len(adopted)

    def _admit_unknown(self) -> list[str]:
        """Queue every clip directory in queue/ not known yet, oldest first; quarantine
        those that cannot be trusted. Start-up and 'spool retry' both come through here."""
        admitted = []
        for entry in sorted(self.queue_dir.iterdir()):
            if entry.name in self._sizes or not entry.is_dir():
                continue
            checked = self._checked_meta(entry)
            if isinstance(checked, str):
                self._move_to_quarantine(entry.name, checked, detail={})
                continue
            self._admit(checked)
            admitted.append(entry.name)
        return admitted

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

    def make_room(self, incoming: int) -> bool:
        """True when ``incoming`` more bytes fit the quota and the free-space floor,
        evicting the oldest waiting clips first if the policy says so."""

        def fits() -> bool:
            if self.limits.max_bytes and self.queued.bytes + incoming > self.limits.max_bytes:
                return False
            return self.free_bytes() - incoming >= self.limits.min_free_bytes

        if fits():
            return True
        if self.limits.full_policy != "evict_oldest":
            return False
        for clip_id in sorted(self._sizes):
            if clip_id in self.uploading:
                continue
            size = self._sizes[clip_id]
            shutil.rmtree(self.queue_dir / clip_id, ignore_errors=True)
            self._forget(clip_id)
            log.warning("clip_evicted", clip_id=clip_id, bytes=size, policy="evict_oldest")
            if fits():
                _fsync_dir(self.queue_dir)
                return True
        _fsync_dir(self.queue_dir)
        return fits()

    @contextlib.asynccontextmanager
    async def receiving(self, sender: Sender, *, filename: str, content_type: str) -> AsyncIterator[ClipWriter]:
        """A writer for one incoming clip; anything not committed is removed on exit."""
        now = datetime.now(UTC)
        clip_id = new_clip_id(now)
        directory = self.incoming_dir / clip_id
        directory.mkdir()
        fields = dict(
            camera=sender.camera,
            filename=filename,
            content_type=content_type,
            received_at=now.isoformat(),
            query=sender.query,
            source=sender.source,
        )
        writer = ClipWriter(self, clip_id, directory, fields)
        try:
            yield writer
        finally:
            writer.discard()

    def _admit(self, meta: ClipMeta) -> None:
        self._sizes[meta.clip_id] = meta.size
        self.queued.clips += 1
        self.queued.bytes += meta.size
        self.pending.put_nowait(meta.clip_id)

    # ----- upload side ----------------------------------------------------

    def clip_dir(self, clip_id: str) -> Path:
        return self.queue_dir / clip_id

    def data_path(self, clip_id: str) -> Path:
        return self.queue_dir / clip_id / DATA

    def meta(self, clip_id: str) -> ClipMeta:
        return ClipMeta.from_json((self.queue_dir / clip_id / META).read_bytes())

    def load_upload_state(self, clip_id: str) -> dict[str, Any] | None:
        try:
            state = json.loads((self.queue_dir / clip_id / UPLOAD_STATE).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError:
            # A torn state file only costs a restart of the upload, never the clip.
            log.warning("upload_state_unreadable", clip_id=clip_id)
            return None
        return state if isinstance(state, dict) else None

    def save_upload_state(self, clip_id: str, state: dict[str, Any] | None) -> None:
        path = self.queue_dir / clip_id / UPLOAD_STATE
        if state is None:
            path.unlink(missing_ok=True)
        else:
            _write_file_durably(path, json.dumps(state).encode())

    def oldest_pending_at(self) -> datetime | None:
        """When the oldest clip still waiting for upload arrived (ids sort by arrival)."""
        if not self._sizes:
            return None
        return clip_id_time(min(self._sizes))

    def _forget(self, clip_id: str) -> None:
        size = self._sizes.pop(clip_id, None)
        if size is not None:
            self.queued.clips -= 1
            self.queued.bytes -= size

    def remove(self, clip_id: str) -> None:
        """Called only once the destination confirmed the clip."""
        shutil.rmtree(self.queue_dir / clip_id)
        _fsync_dir(self.queue_dir)
        self._forget(clip_id)

    def quarantine(self, clip_id: str, reason: str, detail: dict[str, Any]) -> None:
        self._move_to_quarantine(clip_id, reason, detail)
        self._forget(clip_id)

    def _move_to_quarantine(self, clip_id: str, reason: str, detail: dict[str, Any]) -> None:
        source = self.queue_dir / clip_id
        record = {
            "reason": reason,
            "at": datetime.now(UTC).isoformat(),
            "fix": "fix the cause, then run 'axis-relay spool retry' to queue it again",
            **detail,
        }
        _write_file_durably(source / REASON, json.dumps(record, indent=1).encode())
        os.rename(source, self.quarantine_dir / clip_id)
        _fsync_dir(self.quarantine_dir)
        _fsync_dir(self.queue_dir)
        log.error("clip_quarantined", clip_id=clip_id, path=str(self.quarantine_dir / clip_id), **record)

    # ----- operator -------------------------------------------------------

    def entries(self) -> Iterator[tuple[str, str, Path]]:
        """(state, clip_id, directory) for every clip on disk, oldest first."""
        for state, d in (("queued", self.queue_dir), ("quarantined", self.quarantine_dir)):
            if d.is_dir():
                for entry in sorted(d.iterdir()):
                    if entry.is_dir():
                        yield state, entry.name, entry

    def retry_quarantined(self, clip_ids: list[str] | None = None) -> list[str]:
        """Move quarantined clips back to the queue (the daemon picks them up on start)."""
        moved = []
        for entry in sorted(self.quarantine_dir.iterdir()):
            if clip_ids and entry.name not in clip_ids:
                continue
            (entry / REASON).unlink(missing_ok=True)
            os.rename(entry, self.queue_dir / entry.name)
            moved.append(entry.name)
        if moved:
            _fsync_dir(self.queue_dir)
            _fsync_dir(self.quarantine_dir)
        return moved
