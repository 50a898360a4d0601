"""The API Gateway endpoint as the relay talks to it: one HTTP session for the gateway
(the seed's POST, the hand-off function) and the presigned S3 URLs it hands out, and
what each kind of refusal means. Used by the destination (apigw.py), the presigned
store (handoff.py) and `axis-relay apigw check`; it imports none of them."""

from __future__ import annotations

import contextlib
import json
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog

from relay._compat import one_attempt
from relay.config import APIGW_DEFAULT_BODY_BYTES, ApiGatewayConfig
from relay.spool.clip import ClipMeta
from relay.upload.body import FileRange
from relay.upload.failures import CommitConflict, EndpointError, PermanentUploadError

log = structlog.get_logger("relay.apigw")

# The largest body whose base64 fits the Lambda request limit: a 5xx for a body over
# this (possible only when apigw.max_body_bytes was raised) is most likely that limit.
LAMBDA_BODY_LIMIT = APIGW_DEFAULT_BODY_BYTES

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


class PayloadRefused(Exception):
    """The gateway or the function refused the clip for its size."""


class HandoffUnavailable(Exception):
    """The endpoint offers no presigned hand-off."""


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
