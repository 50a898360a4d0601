"""The presigned hand-off: object store operations through the URLs the cloud side signs.

The endpoint (``apigw.handoff_url``, the reference function in cloud/) signs S3 requests;
the relay sends the bytes to S3 itself, so a clip of any size goes up with every rule
of the direct path (``relay.upload.delivery``): checksums, conditional commits, resume.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp

from relay.spool.clip import ClipMeta
from relay.spool.progress import Part
from relay.upload.body import FileRange
from relay.upload.delivery import Completion, OpenUpload, StoredObject
from relay.upload.failures import EndpointError
from relay.upload.gateway import Endpoint, HandoffUnavailable
from relay.upload.metadata import object_metadata


def _presigned(answer: dict[str, Any]) -> tuple[str, dict[str, str]]:
    url, headers = answer.get("url"), answer.get("headers") or {}
    if not isinstance(url, str) or not isinstance(headers, dict):
        raise EndpointError(502, "BadHandoffAnswer", f"no presigned URL in {answer!r:.200}")
    return url, {str(k): str(v) for k, v in headers.items()}


class HandoffStore:
    """The object store operations, through presigned URLs the endpoint hands out."""

    name: Literal["handoff"] = "handoff"

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    @staticmethod
    def _object_fields(meta: ClipMeta, key: str) -> dict[str, Any]:
        """What the function signs into the presigned request: the object's metadata
        (relay.upload.s3.object_metadata, names with '_' for '-'), its key and size."""
        fields: dict[str, Any] = {k.replace("-", "_"): v for k, v in object_metadata(meta).items()}
        return {"key": key, "content_type": meta.content_type, "size": meta.size, **fields}

    async def put(self, meta: ClipMeta, key: str, body: FileRange) -> bool:
        url, headers = _presigned(await self._endpoint.call("put", **self._object_fields(meta, key)))
        status, _ = await self._endpoint.put(url, headers, body)
        return status == 200

    async def create_multipart(self, meta: ClipMeta, key: str) -> str:
        answer = await self._endpoint.call("create", **self._object_fields(meta, key))
        if not isinstance(answer.get("upload_id"), str):
            raise EndpointError(502, "BadHandoffAnswer", f"no upload_id in {answer!r:.200}")
        return str(answer["upload_id"])

    async def open_uploads(self, key: str) -> list[OpenUpload]:
        answer = await self._endpoint.call("uploads", key=key)
        uploads = answer.get("uploads")
        if not isinstance(uploads, list):
            raise EndpointError(502, "BadHandoffAnswer", f"no uploads list in {answer!r:.200}")
        try:
            return [
                OpenUpload(str(u["upload_id"]), datetime.fromisoformat(str(u["initiated"])).astimezone(UTC))
                for u in uploads
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise EndpointError(502, "BadHandoffAnswer", f"malformed uploads in {answer!r:.200}: {exc}") from None

    async def upload_part(self, key: str, upload_id: str, number: int, body: FileRange, checksum: str) -> str:
        # One URL per part, asked for just before it is sent: a URL cannot expire
        # during an outage between parts.
        answer = await self._endpoint.call("part", key=key, upload_id=upload_id, number=number, crc32c=checksum)
        url, headers = _presigned(answer)
        status, etag = await self._endpoint.put(url, headers, body)
        if status != 200 or not etag:
            raise EndpointError(502, "BadPartAnswer", f"part {number}: HTTP {status}, ETag {etag!r}")
        return etag

    async def list_parts(self, key: str, upload_id: str) -> dict[int, str] | None:
        answer = await self._endpoint.call("parts", key=key, upload_id=upload_id)
        parts = answer.get("parts")
        if parts is None:
            return None
        if not isinstance(parts, dict):
            raise EndpointError(502, "BadHandoffAnswer", f"parts is not an object in {answer!r:.200}")
        return {int(n): str(etag) for n, etag in parts.items()}

    async def complete(self, meta: ClipMeta, key: str, upload_id: str, parts: list[Part]) -> Completion:
        listing = [{"number": p.number, "etag": p.etag, "crc32c": p.crc32c} for p in parts]
        answer = await self._endpoint.call("complete", key=key, upload_id=upload_id, parts=listing, crc32c=meta.crc32c)
        outcome = answer.get("outcome")
        if outcome not in ("done", "taken", "gone", "conflict"):
            raise EndpointError(502, "BadHandoffAnswer", f"unknown outcome in {answer!r:.200}")
        return outcome  # type: ignore[no-any-return]

    async def abort(self, key: str, upload_id: str) -> None:
        # Best effort: parts left behind are removed by the bucket's lifecycle rule.
        with contextlib.suppress(EndpointError, HandoffUnavailable, aiohttp.ClientError, OSError):
            await self._endpoint.call("abort", key=key, upload_id=upload_id)

    async def head(self, key: str) -> StoredObject | None:
        found = (await self._endpoint.call("head", key=key)).get("object")
        if not isinstance(found, dict):
            return None
        return StoredObject(found.get("clip_id"), found.get("size"), found.get("crc32c"))
