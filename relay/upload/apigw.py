"""The API Gateway destination: clips through API Gateway -> Lambda -> S3.

A clip small enough for one request (``apigw.max_body_bytes``) is POSTed exactly as a
device sends it to the seed's function: raw body, ``Content-Type``,
``Content-Disposition: attachment; filename="..."``, the camera as ``subfolder``,
``x-api-key``. The camera goes both as the query parameter and as a ``subfolder``
header: the seed's mapping template puts query parameters where the seed's handler
does not look, and headers where it does. Two extra headers (``X-Clip-Id``, ``X-Clip-Crc32c``) let the reference
function in cloud/ have S3 verify the bytes and recognise a retry; other functions
ignore them.

A larger clip (or one the gateway refuses with 413) goes through the presigned
hand-off: the endpoint signs S3 requests and the relay sends the bytes to S3 itself,
with the resume and never-overwrite rules of the direct S3 path (``relay.delivery``).
If no hand-off is offered, the clip goes to the fallback destination, or to quarantine
with a message that names the limit and the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from relay.config import ApiGatewayConfig, RelayConfig
from relay.spool.clip import ClipMeta
from relay.spool.store import SpoolStore
from relay.upload.delivery import (
    Delivered,
    ObjectDelivery,
    uplink,
    whole_clip,
)
from relay.upload.failures import PermanentUploadError
from relay.upload.gateway import Endpoint, HandoffUnavailable, PayloadRefused
from relay.upload.handoff import HandoffStore
from relay.upload.s3 import S3Destination

log = structlog.get_logger("relay.apigw")

# Written by `axis-relay apigw check` in the spool directory once a test clip arrived.
VERIFIED_FILE = "apigw-verified.json"


def is_verified(spool_dir: Path, url: str) -> bool:
    """Whether `axis-relay apigw check` saw a test clip arrive through ``url``."""
    try:
        record = json.loads((spool_dir / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("url") == url


def seed_key(meta: ClipMeta) -> str:
    """Where the seed's function puts a clip: ``<subfolder>/<filename>``."""
    return f"{meta.camera}/{meta.filename}"


class ApiGatewayDestination:
    def __init__(
        self, endpoint: Endpoint, config: ApiGatewayConfig, spool: SpoolStore, fallback: S3Destination | None
    ) -> None:
        # The API key, if any, is checked by the endpoint; S3 credentials only matter
        # for the fallback.
        self.has_credentials = fallback.has_credentials if fallback else True
        self._endpoint = endpoint
        self._config = config
        self._spool = spool
        self._fallback = fallback
        self._uplink = uplink(config.max_upload_bytes_per_s)
        self._handoff = ObjectDelivery(
            HandoffStore(endpoint),
            spool,
            multipart_threshold_bytes=config.multipart_threshold_bytes,
            part_size_bytes=config.part_size_bytes,
            limit=self._uplink,
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: RelayConfig, spool: SpoolStore) -> AsyncIterator[ApiGatewayDestination]:
        assert config.apigw is not None  # checked by the config
        async with contextlib.AsyncExitStack() as stack:
            fallback = None
            if config.apigw.fallback == "s3" and config.s3 is not None:
                fallback = await stack.enter_async_context(S3Destination.open(config.s3, spool))
            verified = await asyncio.to_thread(is_verified, config.spool.dir, config.apigw.url)
            endpoint = await stack.enter_async_context(Endpoint.open(config.apigw, verified=verified))
            yield cls(endpoint, config.apigw, spool, fallback)

    async def deliver(self, meta: ClipMeta) -> Delivered:
        limit = self._config.max_body_bytes
        too_large = f"more than one request through API Gateway and Lambda takes (apigw.max_body_bytes = {limit})"
        if self._handoff.resumable_state(meta.clip_id) is None and meta.size <= limit:
            try:
                return await self._post(meta)
            except PayloadRefused as exc:
                too_large = f"refused for its size by the gateway ({exc})"
                log.warning(
                    "apigw_payload_refused",
                    clip_id=meta.clip_id,
                    bytes=meta.size,
                    max_body_bytes=limit,
                    error=str(exc),
                    fix="lower apigw.max_body_bytes",
                )
        try:
            return await self._handoff.deliver(meta, seed_key(meta))
        except HandoffUnavailable as exc:
            if self._fallback is not None:
                log.info("apigw_fallback", clip_id=meta.clip_id, bytes=meta.size, reason=str(exc), to="s3")
                return dataclasses.replace(await self._fallback.deliver(meta), route="fallback_s3")
            raise PermanentUploadError(
                f"the clip is {meta.size} bytes, {too_large}, and the endpoint offers no presigned hand-off ({exc})",
                code="ClipTooLargeForGateway",
                fix='deploy cloud/ and set apigw.handoff_url, or set apigw.fallback = "s3" with an [s3] '
                "section; then 'axis-relay spool retry'",
            ) from None

    async def _post(self, meta: ClipMeta) -> Delivered:
        body = await whole_clip(self._spool, meta, self._uplink)
        result = await self._endpoint.post_clip(meta, body)
        key = result.get("key")
        # The function decides where the clip goes; the relay knows only what it says.
        return Delivered(
            key if isinstance(key, str) else None,
            already_present=bool(result.get("already_present")),
            route="post",
        )

    async def abandon(self, meta: ClipMeta) -> None:
        await self._handoff.abandon(meta)
        if self._fallback is not None:
            await self._fallback.abandon(meta)
