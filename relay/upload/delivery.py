"""One clip in, one object out, verified and never overwritten, whatever store holds it.

The rules every object store follows (S3 with our credentials, or S3 through presigned
URLs handed out by the cloud side):

- every attempt reads from the spooled file, never from a device's request;
- the CRC32C taken at ingest goes with the bytes, so the store verifies them;
- the commit is conditional (``If-None-Match: *``), so a retry after a lost answer cannot
  overwrite or duplicate, and a key holding other content gets ``<stem>~<clip id>``;
- multipart progress (UploadId, part ETags) is saved in the spool as parts complete, so an
  upload interrupted by a crash or an outage resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import structlog

from relay import crashpoints
from relay.spool.clip import ClipMeta, crc32c_b64
from relay.spool.progress import Part, UploadProgress
from relay.spool.store import SpoolStore
from relay.templates import key_fields
from relay.upload.bandwidth import TokenBucket, Unlimited
from relay.upload.body import FileRange
from relay.upload.failures import FIXES, CommitConflict, PermanentUploadError

log = structlog.get_logger("relay.delivery")

# "conflict": 409 ConditionalRequestConflict; AWS says to upload every part again.
Completion = Literal["done", "taken", "gone", "conflict"]
# How a clip went, for the log, the metrics and the ledger: straight to S3, or through
# API Gateway as one POST, through the presigned hand-off, or to the fallback bucket.
# "peer": the other relay of a pair stored it; this one found it there and sent nothing.
Route = Literal["s3", "post", "handoff", "fallback_s3", "peer"]
# What a key holds when a conditional commit did not go through.
KeyContent = Literal["this clip", "other content", "nothing"]  # what a key holds


@dataclass(frozen=True)
class Delivered:
    # Where the clip is, when the relay knows: on the API Gateway POST path the function
    # picks the key, and only an answer that names it tells.
    key: str | None
    already_present: bool = False
    route: Route = "s3"


@dataclass(frozen=True)
class StoredObject:
    """What a key holds, as far as telling "this clip" from "other content" needs."""

    clip_id: str | None
    size: int | None
    crc32c: str | None


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload in progress for a key, as the store lists it."""

    upload_id: str
    initiated: datetime


class ObjectStore(Protocol):
    """The operations a resumable, conditional, checksummed upload needs."""

    @property
    def name(self) -> Literal["s3", "handoff"]:
        """Saved with multipart progress: an upload id means nothing to another store."""
        ...

    async def put(self, meta: ClipMeta, key: str, body: FileRange) -> bool:
        """Store ``body`` at ``key`` unless the key exists; False if it does."""
        ...

    async def create_multipart(self, meta: ClipMeta, key: str) -> str: ...

    async def open_uploads(self, key: str) -> list[OpenUpload]:
        """The multipart uploads in progress for exactly this key."""
        ...

    async def upload_part(self, key: str, upload_id: str, number: int, body: FileRange, checksum: str) -> str:
        """Upload one part; returns its ETag."""
        ...

    async def list_parts(self, key: str, upload_id: str) -> dict[int, str] | None:
        """Part number -> ETag of the parts the store holds; None if the upload is gone."""
        ...

    async def complete(self, meta: ClipMeta, key: str, upload_id: str, parts: list[Part]) -> Completion: ...

    async def abort(self, key: str, upload_id: str) -> None: ...

    async def head(self, key: str) -> StoredObject | None: ...


# How far the store's clock (an upload's Initiated time) may be behind the relay's.
ORPHAN_CLOCK_SKEW = timedelta(minutes=15)


def _begun_since(intent: UploadProgress) -> datetime | None:
    """The earliest Initiated time an upload created for this intent can carry (None: an
    intent without a time, set aside after a 409: any will do)."""
    return intent.intent_at - ORPHAN_CLOCK_SKEW if intent.intent_at is not None else None


def object_key(template: str, meta: ClipMeta) -> str:
    """The clip's key. {start} and {end} are the footage's span where it is known, else
    the arrival; {date} is the arrival, but for back-fill the footage's start (so it
    lands beside the clips of the same day)."""
    starts, ends = meta.starts or meta.received, meta.ends or meta.received
    fields = key_fields(
        camera=meta.camera,
        filename=meta.filename,
        date=starts if meta.origin == "backfill" else meta.received,
        clip_id=meta.clip_id,
        origin=meta.origin,
        start=starts,
        end=ends,
    )
    return template.format(**fields).lstrip("/")


def disambiguated(key: str, clip_id: str) -> str:
    """The key to use when ``key`` already holds other content: keep both, lose neither."""
    stem, ext = posixpath.splitext(key)
    return f"{stem}~{clip_id}{ext}"


async def whole_clip(store: SpoolStore, meta: ClipMeta, limit: TokenBucket | Unlimited) -> FileRange:
    """The spooled clip as a body, checked against the size that arrived, once the
    uplink has room for it."""
    path = store.data_path(meta.clip_id)
    size = (await asyncio.to_thread(path.stat)).st_size
    if size != meta.size:
        raise PermanentUploadError(f"spooled clip is {size} bytes, but {meta.size} arrived")
    await limit.take(meta.size)
    return FileRange(path, 0, meta.size)


def uplink(bytes_per_s: int) -> TokenBucket | Unlimited:
    return TokenBucket(bytes_per_s, burst_bytes=max(bytes_per_s, 64 * 1024)) if bytes_per_s else Unlimited()


class ObjectDelivery:
    def __init__(
        self,
        store: ObjectStore,
        spool: SpoolStore,
        *,
        multipart_threshold_bytes: int,
        part_size_bytes: int,
        limit: TokenBucket | Unlimited,
    ) -> None:
        self._store = store
        self._spool = spool
        self._threshold = multipart_threshold_bytes
        self._part_size = part_size_bytes
        self._uplink = limit
        self._starting = asyncio.Lock()

    def resumable_state(self, clip_id: str) -> UploadProgress | None:
        """Progress saved by this store for the clip (a multipart upload to resume)."""
        progress = self._spool.load_upload_state(clip_id)
        return progress if progress is not None and progress.via == self._store.name else None

    async def deliver(self, meta: ClipMeta, key: str) -> Delivered:
        if progress := self.resumable_state(meta.clip_id):
            key = progress.key  # the key an interrupted upload was going to
        while True:
            if meta.size < self._threshold:
                committed = await self._put(meta, key)
            else:
                committed = await self._multipart(meta, key)
            if committed:
                crashpoints.reached(crashpoints.UPLOAD_AFTER_COMMIT)
                return Delivered(key, route=self._store.name)
            # Not committed: the key exists, or a multipart upload vanished. The object
            # may be ours (a commit whose answer was lost), other content, or absent.
            holder = await self._what_key_holds(key, meta)
            if holder == "this clip":
                return Delivered(key, already_present=True, route=self._store.name)
            if holder == "other content":
                other = key
                key = disambiguated(other, meta.clip_id)
                log.warning("key_taken", clip_id=meta.clip_id, key=other, new_key=key, store=self._store.name)

    async def _put(self, meta: ClipMeta, key: str) -> bool:
        body = await whole_clip(self._spool, meta, self._uplink)
        # The store checks the body against the CRC taken at ingest: none to compute here.
        return await self._store.put(meta, key, body)

    async def _multipart(self, meta: ClipMeta, key: str) -> bool:
        clip_id = meta.clip_id
        progress = self.resumable_state(clip_id)
        parts: dict[int, Part] = {}
        if progress is not None and progress.key == key and progress.upload_id is not None:
            kept = await self._reconcile(key, progress, progress.upload_id)
            if kept is None:
                # The store no longer knows the upload: completed just before a crash
                # (then the object is there), or aborted/expired (then start over).
                if await self._what_key_holds(key, meta) == "this clip":
                    await asyncio.to_thread(self._spool.save_upload_state, clip_id, None)
                    return True
                progress = None
            else:
                parts = kept
        if progress is None or progress.key != key or progress.upload_id is None or progress.part_size is None:
            parts = {}
            progress = await self._start(meta, key, intent=progress if progress and progress.key == key else None)
        upload_id, part_size = progress.started()
        count = max(1, -(-meta.size // part_size))
        path = self._spool.data_path(clip_id)
        # The store checks each part against the checksum sent with it, but those are
        # taken now, from the disk; the clip's own CRC (taken at ingest) is checked
        # here, over every part, so a clip damaged on disk is never completed.
        running = 0
        for number in range(1, count + 1):
            offset = (number - 1) * part_size
            part = FileRange(path, offset, min(part_size, meta.size - offset))
            checksum, running = await asyncio.to_thread(part.checksums, running)
            if number in parts:
                continue
            await self._uplink.take(part.length)
            etag = await self._store.upload_part(key, upload_id, number, part, checksum)
            parts[number] = Part(number, etag, checksum)
            await asyncio.to_thread(self._spool.save_upload_state, clip_id, progress.with_parts(parts))
            crashpoints.reached(crashpoints.UPLOAD_BETWEEN_PARTS)
        if crc32c_b64(running) != meta.crc32c:
            await self._abort(key, upload_id, clip_id)
            raise PermanentUploadError(
                "the spooled clip no longer matches the checksum taken when it arrived",
                code="BadDigest",
                fix=FIXES["BadDigest"],
            )
        outcome = await self._store.complete(meta, key, upload_id, [parts[n] for n in sorted(parts)])
        if outcome == "taken":
            await self._abort(key, upload_id, clip_id)
            return False
        if outcome == "gone":
            # Completed by an attempt whose answer was lost, or expired: either the
            # object is there (checked by the caller) or we upload again.
            await asyncio.to_thread(self._spool.save_upload_state, clip_id, None)
            return False
        if outcome == "conflict":
            # Raced another operation on the key (perhaps our own earlier complete, still
            # being processed). As AWS says: a new upload, every part again. The old one
            # is set aside, never adopted, and aborted once the clip is committed.
            aside = UploadProgress(key, self._store.name, superseded=(*progress.superseded, upload_id))
            await asyncio.to_thread(self._spool.save_upload_state, clip_id, aside)
            raise CommitConflict(f"CompleteMultipartUpload {key} ({upload_id}) conflicted with another operation")
        # Uploads given up after a 409 on their completion are not needed any more.
        for superseded in progress.superseded:
            await self._store.abort(key, superseded)
            log.info("multipart_superseded_aborted", key=key, upload_id=superseded, store=self._store.name)
        return True

    async def _start(self, meta: ClipMeta, key: str, intent: UploadProgress | None) -> UploadProgress:
        """A multipart upload to fill: the one a crash left between S3's answer and our
        record of it, if there is one, else a new one. The intent to create is saved
        before the create, so after a crash the relay knows to look for what S3 holds."""
        clip_id = meta.clip_id
        progress = UploadProgress(
            key, self._store.name, part_size=self._part_size, superseded=intent.superseded if intent else ()
        )
        # One start at a time: two clips with one key (a file-name template without a
        # time in it) must not take each other's fresh upload for an orphan.
        async with self._starting:
            upload_id = await self._adopt_orphans(meta, key, intent) if intent else None
            if upload_id is None:
                intent = dataclasses.replace(progress, intent_at=datetime.now(UTC))
                await asyncio.to_thread(self._spool.save_upload_state, clip_id, intent)
                crashpoints.reached(crashpoints.UPLOAD_BEFORE_CREATE)
                upload_id = await self._store.create_multipart(meta, key)
                crashpoints.reached(crashpoints.UPLOAD_AFTER_CREATE)
                log.info("multipart_started", clip_id=clip_id, key=key, upload_id=upload_id, store=self._store.name)
            progress = dataclasses.replace(progress, upload_id=upload_id)
            await asyncio.to_thread(self._spool.save_upload_state, clip_id, progress)
        return progress

    async def _adopt_orphans(self, meta: ClipMeta, key: str, intent: UploadProgress) -> str | None:
        """After a crash between create and its record: of the uploads open for the key
        that no other clip of this spool holds, adopt the newest begun since the intent
        (allowing for clock skew) and abort the rest; they would cost money until the
        bucket's lifecycle rule removed them."""
        held = await asyncio.to_thread(self._spool.upload_ids_in_use, meta.clip_id)
        held |= set(intent.superseded)  # set aside after a 409: not an orphan
        orphans = sorted(
            (u for u in await self._store.open_uploads(key) if u.upload_id not in held),
            key=lambda u: u.initiated,
        )
        since = _begun_since(intent)
        ours = orphans[-1] if orphans and (since is None or orphans[-1].initiated >= since) else None
        for orphan in orphans:
            if orphan is not ours:
                await self._store.abort(key, orphan.upload_id)
                log.warning("multipart_orphan_aborted", key=key, upload_id=orphan.upload_id, store=self._store.name)
        if ours is not None:
            log.info("multipart_adopted", key=key, upload_id=ours.upload_id, store=self._store.name)
            return ours.upload_id
        return None

    async def abandon(self, meta: ClipMeta) -> None:
        """Abort the clip's open multipart upload, if any (it goes to quarantine):
        parts left behind would cost money until a lifecycle rule removes them."""
        progress = self.resumable_state(meta.clip_id)
        if progress is not None and progress.upload_id is not None:
            await self._abort(progress.key, progress.upload_id, meta.clip_id)
            log.info("multipart_aborted", key=progress.key, upload_id=progress.upload_id, store=self._store.name)

    async def _reconcile(self, key: str, progress: UploadProgress, upload_id: str) -> dict[int, Part] | None:
        """Parts recorded locally that the store still holds; None if the upload is gone."""
        recorded = progress.parts_by_number()
        held = await self._store.list_parts(key, upload_id)
        if held is None:
            log.info("multipart_gone", key=key, upload_id=upload_id, store=self._store.name)
            return None
        kept = {n: p for n, p in recorded.items() if held.get(n) == p.etag}
        log.info("multipart_resumed", key=key, upload_id=upload_id, parts_kept=len(kept), store=self._store.name)
        return kept

    async def _abort(self, key: str, upload_id: str, clip_id: str) -> None:
        await self._store.abort(key, upload_id)
        await asyncio.to_thread(self._spool.save_upload_state, clip_id, None)

    async def holds(self, key: str, meta: ClipMeta) -> bool:
        """Does ``key`` hold this clip (the same bytes, whoever stored them)?"""
        return await self._what_key_holds(key, meta) == "this clip"

    async def _what_key_holds(self, key: str, meta: ClipMeta) -> KeyContent:
        """'this clip', 'other content' or 'nothing': what the key holds now."""
        found = await self._store.head(key)
        if found is None:
            return "nothing"
        if found.clip_id == meta.clip_id:
            return "this clip"
        if found.size == meta.size and found.crc32c == meta.crc32c:
            return "this clip"  # same bytes sent twice (e.g. by a device): no second copy
        return "other content"
