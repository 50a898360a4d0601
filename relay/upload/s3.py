"""The S3 destination: the relay's own credentials, straight to the bucket.

``S3Store`` maps the operations of a resumable, conditional, checksummed upload
(``relay.delivery``) onto the S3 API through aioboto3; ``S3Destination`` picks the key
from ``s3.key_template`` and hands the clip to ``ObjectDelivery``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

import aioboto3
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from relay._compat import OneAttemptHTTPSession
from relay.config import S3Config
from relay.coverage.keys import KeyLayout
from relay.spool.clip import ClipMeta
from relay.spool.progress import Part
from relay.spool.store import SpoolStore
from relay.upload.body import FileRange
from relay.upload.botocore_data import lean_loader
from relay.upload.delivery import (
    Completion,
    Delivered,
    ObjectDelivery,
    OpenUpload,
    StoredObject,
    object_key,
    uplink,
)
from relay.upload.failures import (
    FIXES,
    CommitConflict,
    DestinationRefused,
    error_code,
    http_status,
    no_such_key,
)
from relay.upload.metadata import object_metadata

log = structlog.get_logger("relay.s3")


def payload_signing(endpoint_url: str | None) -> dict[str, bool]:
    """No SHA-256 of every body for the signature over HTTPS. botocore skips it only when
    it computed the checksum header itself; ours comes from ingest, so it would hash
    every byte again: on a Raspberry Pi, more CPU than the CRC32C it was meant to save
    (bench/signing.py). TLS and the CRC32C S3 verifies carry the integrity. Over plain
    HTTP (a local test server) the payload stays signed."""
    https = endpoint_url is None or endpoint_url.startswith("https://")
    return {"payload_signing_enabled": False} if https else {}


class S3Store:
    name: Literal["s3"] = "s3"

    def __init__(self, client: Any, bucket: str, *, stall_warning_s: float, give_up_s: float) -> None:
        self._client = client
        self._bucket = bucket
        self._watch = {"stall_warning_s": stall_warning_s, "give_up_s": give_up_s}

    def _object_args(self, meta: ClipMeta, key: str) -> dict[str, Any]:
        return {"Bucket": self._bucket, "Key": key, "ContentType": meta.content_type, "Metadata": object_metadata(meta)}

    async def put(self, meta: ClipMeta, key: str, body: FileRange) -> bool:
        try:
            async with body.sending(f"PutObject {key}", **self._watch) as stream:
                await self._client.put_object(
                    Body=stream, ChecksumCRC32C=meta.crc32c, IfNoneMatch="*", **self._object_args(meta, key)
                )
        except ClientError as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                return False
            if error_code(exc) == "ConditionalRequestConflict":
                raise CommitConflict(f"PutObject {key}: {exc}") from None
            raise
        return True

    async def create_multipart(self, meta: ClipMeta, key: str) -> str:
        created = await self._client.create_multipart_upload(
            ChecksumAlgorithm="CRC32C", ChecksumType="FULL_OBJECT", **self._object_args(meta, key)
        )
        return str(created["UploadId"])

    async def open_uploads(self, key: str) -> list[OpenUpload]:
        found: list[OpenUpload] = []
        markers: dict[str, str] = {}
        while True:
            try:
                page = await self._client.list_multipart_uploads(Bucket=self._bucket, Prefix=key, **markers)
            except ClientError as exc:
                if http_status(exc) != 403:
                    raise
                # Not worth a clip: an upload a crash left open then waits for the
                # bucket's lifecycle rule instead of being aborted (or adopted) now.
                log.warning(
                    "open_uploads_unlisted",
                    key=key,
                    fix="grant s3:ListBucketMultipartUploads on the bucket",
                )
                return []
            found += [
                OpenUpload(str(u["UploadId"]), u["Initiated"]) for u in page.get("Uploads", []) if u.get("Key") == key
            ]
            if not page.get("IsTruncated"):
                return found
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    async def upload_part(self, key: str, upload_id: str, number: int, body: FileRange, checksum: str) -> str:
        async with body.sending(f"UploadPart {number} of {key}", **self._watch) as stream:
            answer = await self._client.upload_part(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=stream,
                ChecksumCRC32C=checksum,
            )
        return str(answer["ETag"])

    async def list_parts(self, key: str, upload_id: str) -> dict[int, str] | None:
        held: dict[int, str] = {}
        marker = 0
        try:
            while True:
                page = await self._client.list_parts(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                )
                for part in page.get("Parts", []):
                    held[int(part["PartNumber"])] = part["ETag"]
                if not page.get("IsTruncated"):
                    return held
                marker = int(page["NextPartNumberMarker"])
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                return None
            raise

    async def complete(self, meta: ClipMeta, key: str, upload_id: str, parts: list[Part]) -> Completion:
        listing = [{"PartNumber": p.number, "ETag": p.etag, "ChecksumCRC32C": p.crc32c} for p in parts]
        try:
            await self._client.complete_multipart_upload(
                Bucket=self._bucket,
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
                return "taken"
            if code == "NoSuchUpload":
                return "gone"
            if code == "ConditionalRequestConflict":
                return "conflict"
            raise
        return "done"

    async def abort(self, key: str, upload_id: str) -> None:
        # Best effort: parts left behind are removed by the bucket's lifecycle rule.
        with contextlib.suppress(ClientError, OSError):
            await self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)

    async def head(self, key: str) -> StoredObject | None:
        try:
            head = await self._client.head_object(Bucket=self._bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if no_such_key(exc):
                return None
            if http_status(exc) == 403:
                # A missing permission: the relay's fault, not this clip's (delivery pauses).
                raise DestinationRefused(
                    f"S3 refused HeadObject on {key} (HTTP 403)", code="HeadForbidden", fix=FIXES["HeadForbidden"]
                ) from None
            raise
        return StoredObject(
            head.get("Metadata", {}).get("clip-id"), head.get("ContentLength"), head.get("ChecksumCRC32C")
        )


@contextlib.asynccontextmanager
async def open_client(config: S3Config) -> AsyncIterator[tuple[Any, bool]]:
    """The relay's S3 client, and whether any credentials were found for it."""
    core = get_session()
    core.register_component("data_loader", lean_loader(core))
    session = aioboto3.Session(
        botocore_session=core,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key.get_secret_value() if config.secret_access_key else None,
        region_name=config.region,
    )
    boto_config = AioConfig(
        # One attempt per call: our own policy retries, with backoff the operator
        # configured and a log line per retry; botocore's retries would hide both,
        # and so would aiohttp's silent re-send on a reused connection.
        retries={"total_max_attempts": 1, "mode": "standard"},
        http_session_cls=OneAttemptHTTPSession,
        connect_timeout=config.connect_timeout_s,
        read_timeout=config.read_timeout_s,
        max_pool_connections=max(10, config.workers * 2),
        s3={"addressing_style": config.addressing_style, **payload_signing(config.endpoint_url)},
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
        yield client, has_credentials


# Keys of one camera starting at one instant that are looked at for a peer's copy.
PEER_CANDIDATES = 8


class S3Destination:
    def __init__(self, client: Any, config: S3Config, spool: SpoolStore, has_credentials: bool) -> None:
        self.has_credentials = has_credentials
        self._config = config
        self._client = client
        self._layout = KeyLayout(config.key_template)
        self._delivery = ObjectDelivery(
            S3Store(client, config.bucket, stall_warning_s=config.stall_warning_s, give_up_s=config.read_timeout_s),
            spool,
            multipart_threshold_bytes=config.multipart_threshold_bytes,
            part_size_bytes=config.part_size_bytes,
            limit=uplink(config.max_upload_bytes_per_s),
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: S3Config, spool: SpoolStore) -> AsyncIterator[S3Destination]:
        async with open_client(config) as (client, has_credentials):
            yield cls(client, config, spool, has_credentials)

    async def deliver(self, meta: ClipMeta) -> Delivered:
        template = self._config.backfill_key_template if meta.origin == "backfill" else self._config.key_template
        return await self._delivery.deliver(meta, object_key(template, meta))

    async def stored_by_peer(self, meta: ClipMeta) -> str | None:
        """The key where the other relay of a pair stored this clip (the same bytes), or
        None. Its key is this relay's, unless the file names differ (a camera counts
        ``#s`` per action): then it is among the keys of the same camera and start."""
        key = object_key(self._config.key_template, meta)
        if await self._delivery.holds(key, meta):
            return key
        if meta.starts is None or meta.ends is None or not self._layout.spans_in_key:
            return None
        prefix = self._layout.start_prefix(meta.camera, meta.starts)
        try:
            page = await self._client.list_objects_v2(
                Bucket=self._config.bucket, Prefix=prefix, MaxKeys=PEER_CANDIDATES
            )
        except ClientError as exc:
            if http_status(exc) == 403:
                return None  # no s3:ListBucket: the exact key is all there is to go by
            raise
        for found in page.get("Contents", []):
            other = str(found["Key"])
            span = self._layout.span(other)
            if other == key or span is None or (span.starts, span.ends) != (meta.starts, meta.ends):
                continue
            if int(found.get("Size", -1)) == meta.size and await self._delivery.holds(other, meta):
                return other
        return None

    async def abandon(self, meta: ClipMeta) -> None:
        await self._delivery.abandon(meta)
