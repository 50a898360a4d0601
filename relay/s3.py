"""The S3 destination: one clip in, one object out, verified and never overwritten.

Every attempt reads from the spooled file (never from a device's request), sends the
CRC32C taken at ingest so S3 verifies the bytes, and commits with
``If-None-Match: *`` so a retry after a lost answer cannot overwrite or duplicate.
Multipart progress (UploadId, part ETags) is saved in the spool as parts complete,
so an upload interrupted by a crash or an outage resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioboto3
import crc32c
import structlog
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from relay import crashpoints
from relay.bandwidth import TokenBucket, Unlimited
from relay.clip import ClipMeta, crc32c_b64
from relay.config import S3Config
from relay.failures import FIXES, PermanentUploadError, error_code
from relay.spool import Spool

log = structlog.get_logger("relay.s3")


@dataclass(frozen=True)
class Delivered:
    key: str
    already_present: bool = False


def object_key(template: str, meta: ClipMeta) -> str:
    stem, ext = posixpath.splitext(meta.filename)
    return template.format(
        camera=meta.camera,
        filename=meta.filename,
        date=meta.received,
        clip_id=meta.clip_id,
        stem=stem,
        ext=ext,
    ).lstrip("/")


def disambiguated(key: str, clip_id: str) -> str:
    """The key to use when ``key`` already holds other content: keep both, lose neither."""
    stem, ext = posixpath.splitext(key)
    return f"{stem}~{clip_id}{ext}"


def _read_range(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _read_part(path: Path, offset: int, length: int, running: int, for_upload: bool) -> tuple[bytes, str, int]:
    """The part, its own CRC32C for S3 (only when it is to be sent) and ``running``
    extended over it (the whole clip's CRC, checked before completing)."""
    block = _read_range(path, offset, length)
    own = crc32c_b64(crc32c.crc32c(block)) if for_upload else ""
    return block, own, crc32c.crc32c(block, running)


class S3Destination:
    def __init__(self, client: Any, config: S3Config, spool: Spool, has_credentials: bool) -> None:
        self.has_credentials = has_credentials
        rate = config.max_upload_bytes_per_s
        self._uplink: TokenBucket | Unlimited = (
            TokenBucket(rate, burst_bytes=max(rate, 64 * 1024)) if rate else Unlimited()
        )
        self._client = client
        self._config = config
        self._spool = spool

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: S3Config, spool: Spool) -> AsyncIterator[S3Destination]:
        session = aioboto3.Session(
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key.get_secret_value() if config.secret_access_key else None,
            region_name=config.region,
        )
        boto_config = BotoConfig(
            # One attempt per call: our own policy retries, with backoff the operator
            # configured and a log line per retry; botocore's retries would hide both.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=config.connect_timeout_s,
            read_timeout=config.read_timeout_s,
            max_pool_connections=max(10, config.workers * 2),
            s3={"addressing_style": config.addressing_style},
            # We supply CRC32C ourselves (taken once, at ingest); don't let botocore
            # checksum every body again with CRC32 on a small CPU.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        verify: str | bool = str(config.ca_bundle) if config.ca_bundle else True
        # Resolved once here so a site without any credentials fails at start-up with a
        # clear message, instead of quarantining every clip later.
        has_credentials = await session.get_credentials() is not None
        async with session.client("s3", endpoint_url=config.endpoint_url, config=boto_config, verify=verify) as client:
            yield cls(client, config, spool, has_credentials)

    async def deliver(self, meta: ClipMeta) -> Delivered:
        key = object_key(self._config.key_template, meta)
        state = self._spool.load_upload_state(meta.clip_id)
        if state and isinstance(state.get("key"), str):
            key = state["key"]  # the key an interrupted upload was going to
        while True:
            if meta.size < self._config.multipart_threshold_bytes:
                committed = await self._put(meta, key)
            else:
                committed = await self._multipart(meta, key)
            if committed:
                crashpoints.reached(crashpoints.UPLOAD_AFTER_COMMIT)
                return Delivered(key)
            # Not committed: the key exists, or a multipart upload vanished. The object
            # may be ours (a commit whose answer was lost), other content, or absent.
            holder = await self._holder(key, meta)
            if holder == "this clip":
                return Delivered(key, already_present=True)
            if holder == "other content":
                other = key
                key = disambiguated(other, meta.clip_id)
                log.warning("s3_key_taken", clip_id=meta.clip_id, key=other, new_key=key)

    def _object_args(self, meta: ClipMeta, key: str) -> dict[str, Any]:
        return {
            "Bucket": self._config.bucket,
            "Key": key,
            "ContentType": meta.content_type,
            "Metadata": {
                "clip-id": meta.clip_id,
                "camera": meta.camera,
                "received-at": meta.received_at,
                "crc32c": meta.crc32c,
            },
        }

    async def _put(self, meta: ClipMeta, key: str) -> bool:
        """Single PutObject; False when the key is already taken."""
        # S3 checks the body against the CRC taken at ingest: no checksum to compute here.
        body = await asyncio.to_thread(_read_range, self._spool.data_path(meta.clip_id), 0, meta.size)
        if len(body) != meta.size:
            raise PermanentUploadError(f"spooled clip is {len(body)} bytes, but {meta.size} arrived")
        await self._uplink.take(len(body))
        try:
            await self._client.put_object(
                Body=body, ChecksumCRC32C=meta.crc32c, IfNoneMatch="*", **self._object_args(meta, key)
            )
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    async def _multipart(self, meta: ClipMeta, key: str) -> bool:
        bucket, clip_id = self._config.bucket, meta.clip_id
        state = self._spool.load_upload_state(clip_id)
        parts: dict[int, dict[str, str]] = {}
        if state and state.get("key") == key:
            kept = await self._reconcile(key, state)
            if kept is None:
                # S3 no longer knows the upload: completed just before a crash (then the
                # object is there), or aborted/expired (then start over cleanly).
                if await self._holder(key, meta) == "this clip":
                    await asyncio.to_thread(self._spool.save_upload_state, clip_id, None)
                    return True
                state = None
            else:
                parts = kept
        if not state or state.get("key") != key:
            crashpoints.reached(crashpoints.UPLOAD_BEFORE_CREATE)
            created = await self._client.create_multipart_upload(
                ChecksumAlgorithm="CRC32C", ChecksumType="FULL_OBJECT", **self._object_args(meta, key)
            )
            state = {"key": key, "upload_id": created["UploadId"], "part_size": self._config.part_size_bytes}
            parts = {}
            await asyncio.to_thread(self._spool.save_upload_state, clip_id, {**state, "parts": {}})
            log.info("multipart_started", clip_id=clip_id, key=key, upload_id=state["upload_id"])
        upload_id, part_size = state["upload_id"], int(state["part_size"])
        count = max(1, -(-meta.size // part_size))
        path = self._spool.data_path(clip_id)
        # S3 checks each part against the checksum we send with it, but those are taken
        # now, from the disk; the clip's own CRC (taken at ingest) is checked here,
        # over every part, so a clip damaged on disk is never completed.
        running = 0
        for number in range(1, count + 1):
            offset = (number - 1) * part_size
            block, checksum, running = await asyncio.to_thread(
                _read_part, path, offset, min(part_size, meta.size - offset), running, number not in parts
            )
            if number in parts:
                continue
            await self._uplink.take(len(block))
            answer = await self._client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=block, ChecksumCRC32C=checksum
            )
            del block
            parts[number] = {"etag": answer["ETag"], "crc32c": checksum}
            saved = {**state, "parts": {str(n): p for n, p in parts.items()}}
            await asyncio.to_thread(self._spool.save_upload_state, clip_id, saved)
            crashpoints.reached(crashpoints.UPLOAD_BETWEEN_PARTS)
        if crc32c_b64(running) != meta.crc32c:
            await self._abort(key, upload_id, clip_id)
            raise PermanentUploadError(
                "the spooled clip no longer matches the checksum taken when it arrived",
                code="BadDigest",
                fix=FIXES["BadDigest"],
            )
        listing = [
            {"PartNumber": n, "ETag": parts[n]["etag"], "ChecksumCRC32C": parts[n]["crc32c"]} for n in sorted(parts)
        ]
        try:
            await self._client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listing},
                ChecksumCRC32C=meta.crc32c,
                ChecksumType="FULL_OBJECT",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            code = error_code(exc)
            if code in ("PreconditionFailed", "412"):
                await self._abort(key, upload_id, clip_id)
                return False
            if code == "NoSuchUpload":
                # Completed by an attempt whose answer was lost, or expired: either the
                # object is there (checked by the caller) or we upload again.
                await asyncio.to_thread(self._spool.save_upload_state, clip_id, None)
                return False
            raise
        return True

    async def abandon(self, meta: ClipMeta) -> None:
        """Abort the clip's open multipart upload, if any (it goes to quarantine):
        parts left behind would cost money until a lifecycle rule removes them."""
        state = self._spool.load_upload_state(meta.clip_id)
        if state and isinstance(state.get("upload_id"), str):
            await self._abort(str(state["key"]), state["upload_id"], meta.clip_id)
            log.info("multipart_aborted", key=state["key"], upload_id=state["upload_id"])

    async def _reconcile(self, key: str, state: dict[str, Any]) -> dict[int, dict[str, str]] | None:
        """Parts recorded locally that S3 still holds; None if the upload is gone."""
        recorded = {int(n): p for n, p in (state.get("parts") or {}).items()}
        held: dict[int, str] = {}
        marker = 0
        try:
            while True:
                page = await self._client.list_parts(
                    Bucket=self._config.bucket, Key=key, UploadId=state["upload_id"], PartNumberMarker=marker
                )
                for part in page.get("Parts", []):
                    held[int(part["PartNumber"])] = part["ETag"]
                if not page.get("IsTruncated"):
                    break
                marker = int(page["NextPartNumberMarker"])
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                log.info("multipart_gone", key=key, upload_id=state["upload_id"])
                return None
            raise
        kept = {n: p for n, p in recorded.items() if held.get(n) == p["etag"]}
        log.info("multipart_resumed", key=key, upload_id=state["upload_id"], parts_kept=len(kept))
        return kept

    async def _abort(self, key: str, upload_id: str, clip_id: str) -> None:
        with contextlib.suppress(ClientError, OSError):
            await self._client.abort_multipart_upload(Bucket=self._config.bucket, Key=key, UploadId=upload_id)
        await asyncio.to_thread(self._spool.save_upload_state, clip_id, None)

    async def _holder(self, key: str, meta: ClipMeta) -> str:
        """'this clip', 'other content' or 'nothing': what the key holds now."""
        try:
            head = await self._client.head_object(Bucket=self._config.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return "nothing"
            raise
        if head.get("Metadata", {}).get("clip-id") == meta.clip_id:
            return "this clip"
        if head.get("ContentLength") == meta.size and head.get("ChecksumCRC32C") == meta.crc32c:
            return "this clip"  # same bytes sent twice (e.g. by a device): no second copy
        return "other content"
