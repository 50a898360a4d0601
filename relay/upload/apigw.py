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
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from relay.config import LAMBDA_REQUEST_LIMIT, MAPPED_EVENT_OVERHEAD, ApiGatewayConfig, RelayConfig
from relay.spool.clip import ClipMeta
from relay.spool.store import SpoolStore
from relay.upload.body import FileRange
from relay.upload.delivery import (
    Delivered,
    ObjectDelivery,
    uplink,
    whole_clip,
)
from relay.upload.failures import CommitConflict, EndpointError, PermanentUploadError, one_attempt
from relay.upload.handoff import HandoffStore, HandoffUnavailable
from relay.upload.s3 import S3Destination

log = structlog.get_logger("relay.apigw")

# The largest body whose base64 fits the Lambda request limit: a 5xx for a body over
# this (possible only when apigw.max_body_bytes was raised) is most likely that limit.
LAMBDA_BODY_LIMIT = (LAMBDA_REQUEST_LIMIT - MAPPED_EVENT_OVERHEAD) // 4 * 3

_FIXES = {
    400: "read the message: the function refused the clip as sent",
    401: "set apigw.api_key (or AXIS_RELAY_APIGW_API_KEY) to a key of the API's usage plan",
    403: "check apigw.api_key, that the key is in the API's usage plan, and apigw.url",
    404: "check apigw.url: it is the invoke URL of the POST method",
    405: "check apigw.url: the API has no POST method there",
}


_PRESIGNED_FIXES = {
    "AccessDenied": "the hand-off function's role needs s3:PutObject on the bucket's clip keys",
    "SignatureDoesNotMatch": "the hand-off function must sign with SigV4 in the bucket's region, and nothing "
    "between the relay and S3 may change the request",
    "NoSuchBucket": "the hand-off function's BUCKET names a bucket that does not exist",
}


# Written by `axis-relay apigw check` in the spool directory once a test clip arrived.
VERIFIED_FILE = "apigw-verified.json"


def is_verified(spool_dir: Path, url: str) -> bool:
    """Whether `axis-relay apigw check` saw a test clip arrive through ``url``."""
    try:
        record = json.loads((spool_dir / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("url") == url


class PayloadRefused(Exception):
    """The gateway or the function refused the clip for its size."""


def seed_key(meta: ClipMeta) -> str:
    """Where the seed's function puts a clip: ``<subfolder>/<filename>``."""
    return f"{meta.camera}/{meta.filename}"


def _gateway_error(status: int, text: str, headers: Any) -> EndpointError:
    """API Gateway answers errors as {"message": ...} with the kind in x-amzn-ErrorType."""
    message = text.strip()[:300]
    with contextlib.suppress(ValueError):
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            message = body["message"]
    kind = str(headers.get("x-amzn-ErrorType", "")).split(":")[0] or f"HTTP{status}"
    return EndpointError(status, kind, message or f"HTTP {status}", fix=_FIXES.get(status, ""))


def _s3_error(status: int, text: str) -> EndpointError:
    """An S3 error document, from a presigned request."""
    found = re.search(r"<Code>([^<]*)</Code>", text)
    code = found.group(1) if found else f"HTTP{status}"
    found = re.search(r"<Message>([^<]*)</Message>", text)
    message = found.group(1) if found else text.strip()[:300]
    if code == "AccessDenied" and "expired" in message.lower():
        code = "RequestExpired"
    return EndpointError(status, code, message, fix=_PRESIGNED_FIXES.get(code, ""))


def _refuse_redirect(answer: aiohttp.ClientResponse, setting: str) -> None:
    """A redirect is never followed: a client following it would re-send a POST as a
    GET, and a 200 for that GET would look like a delivery."""
    if 300 <= answer.status < 400:
        raise PermanentUploadError(
            f"{answer.url} redirects (HTTP {answer.status}) to {answer.headers.get('Location', '?')}",
            code="Redirect",
            fix=f"set {setting} to the URL that answers itself (the invoke URL, https://)",
        )


class Endpoint:
    """The HTTP side: one client session for API Gateway and the presigned S3 URLs."""

    def __init__(self, session: aiohttp.ClientSession, config: ApiGatewayConfig, *, verified: bool = False) -> None:
        self._session = session
        self._config = config
        self._auth = {"x-api-key": config.api_key.get_secret_value()} if config.api_key else {}
        self._watch = {"stall_warning_s": config.stall_warning_s, "give_up_s": config.read_timeout_s}
        # True once `axis-relay apigw check` saw a test clip arrive through apigw.url.
        self.verified = verified
        self._warned = False

    def _warn_unverified(self, text: str) -> None:
        """Once per run: a bare 200 is all the relay sees of a function that stores nothing."""
        if self._warned:
            return
        self._warned = True
        log.warning(
            "apigw_unverified_acknowledgement",
            url=self._config.url,
            body=text.strip()[:20] or "(empty)",
            risk="an empty or null 200 is also what the seed's published handler answers while storing nothing",
            fix="run 'axis-relay apigw check' to send a test clip and confirm it arrives",
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: ApiGatewayConfig, *, verified: bool = False) -> AsyncIterator[Endpoint]:
        context = ssl.create_default_context(cafile=str(config.ca_bundle) if config.ca_bundle else None)
        timeout = aiohttp.ClientTimeout(sock_connect=config.connect_timeout_s, sock_read=config.read_timeout_s)
        connector = aiohttp.TCPConnector(ssl=context, limit=max(10, config.workers * 2))
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False) as session:
            one_attempt(session)
            yield cls(session, config, verified=verified)

    async def _post(self, url: str, setting: str, **request: Any) -> tuple[int, str, Any]:
        """(status, body text, headers) of one POST to API Gateway."""
        async with self._session.post(url, allow_redirects=False, **request) as answer:
            text = await answer.text(errors="replace")
            _refuse_redirect(answer, setting)
            return answer.status, text, answer.headers

    async def post_clip(self, meta: ClipMeta, body: FileRange) -> dict[str, Any]:
        headers = {
            "Content-Type": meta.content_type,
            "Content-Disposition": f'attachment; filename="{meta.filename}"',
            "subfolder": meta.camera,
            "X-Clip-Id": meta.clip_id,
            "X-Clip-Crc32c": meta.crc32c,
            **self._auth,
        }
        async with body.sending(f"POST {meta.filename}", **self._watch) as stream:
            status, text, answer_headers = await self._post(
                self._config.url,
                "apigw.url",
                params={"subfolder": meta.camera},
                data=stream,
                headers={**headers, "Content-Length": str(body.length)},
            )
        if not 200 <= status < 300:
            error = _gateway_error(status, text, answer_headers)
            if status == 413:
                raise PayloadRefused(f"{error.code}: {error.message}")
            if status >= 500 and body.length > LAMBDA_BODY_LIMIT:
                raise PayloadRefused(f"HTTP {status} for a body over {LAMBDA_BODY_LIMIT} bytes: {error.message}")
            raise error
        if text.strip() in ("", "null") and not self.verified:
            self._warn_unverified(text)
        try:
            result = json.loads(text) if text.strip() else {}
        except ValueError:
            result = {}
        if isinstance(result, dict) and "errorMessage" in result:
            # A non-proxy integration whose error responses are not mapped answers a
            # failed function with 200 and the error as the body: not a delivery.
            raise EndpointError(502, "UnmappedLambdaError", str(result["errorMessage"])[:300])
        return result if isinstance(result, dict) else {}

    async def call(self, action: str, **fields: Any) -> dict[str, Any]:
        """One request to the hand-off endpoint."""
        url = self._config.handoff_url
        if url is None:
            raise HandoffUnavailable("apigw.handoff_url is not set")
        status, text, headers = await self._post(
            url, "apigw.handoff_url", json={"action": action, **fields}, headers=self._auth
        )
        if not 200 <= status < 300:
            error = _gateway_error(status, text, headers)
            # API Gateway answers a resource it does not have with 403 "Missing
            # Authentication Token"; a custom domain or another server with 404.
            if status == 404 or (status == 403 and "MissingAuthenticationToken" in error.code):
                raise HandoffUnavailable(f"{url} answered {status} ({error.message})")
            raise error
        try:
            result = json.loads(text)
        except ValueError:
            raise EndpointError(502, "BadHandoffAnswer", f"not JSON: {text[:200]!r}") from None
        if not isinstance(result, dict):
            raise EndpointError(502, "BadHandoffAnswer", f"not a JSON object: {text[:200]!r}")
        return result

    async def put(self, url: str, headers: dict[str, str], body: FileRange) -> tuple[int, str]:
        """A presigned PUT straight to S3: (status, ETag); 412 = the key is taken."""
        # S3 takes no chunked PUT: the length goes in the header.
        async with body.sending("presigned PUT", **self._watch) as stream:
            sized = {**headers, "Content-Length": str(body.length)}
            async with self._session.put(url, data=stream, headers=sized, allow_redirects=False) as answer:
                text = await answer.text(errors="replace")
        if answer.status in (200, 412):
            return answer.status, answer.headers.get("ETag", "")
        error = _s3_error(answer.status, text)
        if error.code == "ConditionalRequestConflict":
            raise CommitConflict(f"presigned PUT: {error.message}")
        raise error


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
