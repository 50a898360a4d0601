"""The HTTP(S) endpoint AXIS devices send clips to: ``/upload/<device>``.

A device POSTs the raw clip (``Content-Type: video/x-matroska``, name in
``Content-Disposition``), fixed-length or chunked, often at real-time speed. The body
streams to the spool in batches; the device gets 200 only once the clip is durable,
and never a 2xx for anything that is not. ``PUT`` and ``multipart/form-data`` (one
file part) are accepted for other clients; ``GET``/``HEAD`` answer the recipient's
"Test" button.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog
from aiohttp import BodyPartReader, HttpVersion11, hdrs, web
from aiohttp.http_exceptions import PayloadEncodingError
from aiohttp.multipart import content_disposition_filename, parse_content_disposition
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict

from relay import crashpoints
from relay.config import DeviceConfig, IngestConfig
from relay.ingest.auth import authenticate, public_query
from relay.ingest.connections import ConnectionGuard
from relay.ingest.digest import DigestAuth
from relay.ingest.form import FormFields
from relay.ingest.guard import FailureLimiter, allowed_source
from relay.ingest.idle import IdleDeadline
from relay.ingest.rejected import Rejected
from relay.ingest.secret_hash import HashingRefused, SecretChecker, is_hashed
from relay.ops.stats import RelayStats
from relay.spool.clip import ClipMeta, Sender, safe_filename
from relay.spool.spool import Spool
from relay.spool.timing import device_span_reader
from relay.spool.writer import ClipWriter

log = structlog.get_logger("relay.ingest")

READ_SIZE = 256 * 1024
# Set on a request whose credentials were checked before it was told to continue.
AUTHENTICATED = web.RequestKey("authenticated", bool)
# How far ahead of its bytes a body of unknown length makes room: several write
# batches, so room is always made before the writes that need it (one free-space check
# per MiB, not per batch), and a small clip on a nearly full disk is not refused for
# room it would never use.
ROOM_CHECK_BYTES = 1024 * 1024


def filename_from(disposition: str | None) -> str | None:
    if not disposition:
        return None
    _, params = parse_content_disposition(disposition)
    return content_disposition_filename(params, "filename")


class Ingest:
    def __init__(
        self,
        config: IngestConfig,
        devices: Mapping[str, DeviceConfig],
        spool: Spool,
        stats: RelayStats,
        connections: ConnectionGuard,
    ) -> None:
        self._config = config
        self._connections = connections
        self._devices = devices
        self._spool = spool
        self._stats = stats
        self._digest = DigestAuth()
        self._secrets = SecretChecker()
        self._limiter = FailureLimiter(
            config.auth_failures_per_minute, total_per_minute=config.auth_failures_per_minute_total
        )
        self._span_readers = {
            name: device_span_reader(d.filename_template, d.filename_timezone) for name, d in devices.items()
        }
        self._per_device: dict[str, int] = {}
        self._in_progress = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def drain(self, timeout: float) -> int:
        """Wait until no device is mid-upload, at most ``timeout`` s; returns how many still are.

        aiohttp's own graceful shutdown stops reading request bodies at once, which
        would cut off a device that is still streaming; so the listener is closed
        first and the relay waits here before aiohttp's cleanup runs.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            pass
        return self._in_progress

    def app(self) -> web.Application:
        # client_max_size only limits request.read()/post(), which we never use: bodies
        # are streamed, and their size is checked against max_body_bytes as they arrive.
        app = web.Application()
        app.router.add_route("*", "/upload/{device}", self.handle, expect_handler=self._expect)
        app.router.add_route("*", "/{path:.*}", self._unknown_path)
        return app

    async def _unknown_path(self, request: web.Request) -> web.StreamResponse:
        """Scanners, and a recipient URL missing its /upload/<device>: counted, logged at debug."""
        self._stats.ingest_unknown_paths += 1
        log.debug("ingest_unknown_path", path=request.path[:200], method=request.method, source=request.remote)
        return web.json_response({"error": "not found: clips go to /upload/<device>"}, status=404)

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: the sender is told to go on only once its credentials
        and declared size are accepted, so no body is sent to be refused."""
        if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
            return web.json_response({"error": "only Expect: 100-continue is understood"}, status=417)
        try:
            await self._authenticate(request.match_info["device"], request)
            self._check_declared_size(request)
        except Rejected as exc:
            return self._refuse(request, request.match_info["device"], exc)
        request[AUTHENTICATED] = True
        if request.version == HttpVersion11:  # HTTP/1.0 has no interim answers
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    def _check_declared_size(self, request: web.Request) -> None:
        declared = request.content_length
        if declared is not None and declared > self._config.max_body_bytes:
            limit = self._config.max_body_bytes
            raise Rejected(413, f"body of {declared} bytes exceeds ingest.max_body_bytes ({limit} bytes)")

    def _refuse(self, request: web.Request, name: str, exc: Rejected) -> web.StreamResponse:
        self._stats.clips_rejected += 1
        if exc.status == 507:
            self._stats.clips_refused_spool_full += 1
            self._stats.last_refused_spool_full_at = time.time()
        log.warning(
            "clip_rejected",
            camera=name,
            source=request.remote,
            status=exc.status,
            reason=exc.logged,
            method=request.method,
            **exc.received,
        )
        return web.json_response({"error": exc.message}, status=exc.status, headers=exc.headers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # While a request is handled, its connection is never closed to make room.
        with self._connections.request(request.transport):
            return await self._handle(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["device"]
        started = time.monotonic()
        try:
            if not request.get(AUTHENTICATED):  # else checked before 100 Continue
                await self._authenticate(name, request)
            if request.method in (hdrs.METH_GET, hdrs.METH_HEAD):
                # The recipient's "Test" button: the device reached us and logged in.
                log.info("device_test_ok", camera=name, source=request.remote, method=request.method)
                return web.json_response({"status": "ready", "device": name})
            if request.method not in (hdrs.METH_POST, hdrs.METH_PUT):
                raise Rejected(405, "use POST or PUT to send a clip", {"Allow": "GET, HEAD, POST, PUT"})
            self._check_declared_size(request)
            if self._per_device.get(name, 0) >= self._config.max_uploads_per_device:
                raise Rejected(
                    429, f"already {self._per_device[name]} uploads from this device (ingest.max_uploads_per_device)"
                )
            meta = await self._receive_tracked(name, request)
        except Rejected as exc:
            return self._refuse(request, name, exc)
        crashpoints.reached(crashpoints.INGEST_BEFORE_ANSWER)
        self._stats.clips_accepted += 1
        self._stats.bytes_accepted += meta.size
        self._stats.last_clip_at[name] = time.time()
        self._stats.clips_by_device[name] += 1
        self._stats.bytes_by_device[name] += meta.size
        log.info(
            "clip_accepted",
            clip_id=meta.clip_id,
            camera=name,
            filename=meta.filename,
            content_type=meta.content_type,
            bytes=meta.size,
            seconds=round(time.monotonic() - started, 3),
            source=request.remote,
        )
        return web.json_response({"clip_id": meta.clip_id, "bytes": meta.size, "crc32c": meta.crc32c})

    async def _authenticate(self, name: str, request: web.Request) -> None:
        source = request.remote or ""
        braked = Rejected(429, "too many failed logins from this address; wait a minute", {"Retry-After": "60"})
        if self._limiter.blocked(source):
            raise braked
        device = self._devices.get(name)
        if device is None:
            self._limiter.failed(source)
            raise Rejected(404, f"no device named {name!r} is configured on this relay")
        if not allowed_source(source, device.allow_from):
            # The same answer as for a name that is not configured, and braked alike: a
            # stranger learns nothing, not even from when the 429 comes; the operator's
            # log says what happened.
            self._limiter.failed(source)
            raise Rejected(
                404,
                f"no device named {name!r} is configured on this relay",
                logged=f"device {name!r} may not send from {source} (devices.{name}.allow_from)",
            )
        try:
            result = await authenticate(
                device,
                request.query,
                request.headers.get(hdrs.AUTHORIZATION),
                digest=self._digest,
                checker=self._secrets,
                method=request.method,
                uri=request.path_qs,
                may_hash=lambda: not self._limiter.blocked(source),
            )
        except HashingRefused:
            raise braked from None
        if not result.ok:
            if result.presented and not result.stale:
                self._limiter.failed(source)
            challenges = CIMultiDict[str]()
            if device.password:
                if not is_hashed(device.password.get_secret_value()):
                    for challenge in self._digest.challenges(stale=result.stale):
                        challenges.add("WWW-Authenticate", challenge)
                challenges.add("WWW-Authenticate", 'Basic realm="axis-relay"')
            raise Rejected(401, f"authentication failed: {result.reason}", challenges)

    async def _receive_tracked(self, name: str, request: web.Request) -> ClipMeta:
        self._in_progress += 1
        self._per_device[name] = self._per_device.get(name, 0) + 1
        self._idle.clear()
        try:
            return await self._receive(name, request)
        finally:
            self._per_device[name] -= 1
            self._in_progress -= 1
            if not self._in_progress:
                self._idle.set()

    async def _receive(self, name: str, request: web.Request) -> ClipMeta:
        sender = Sender(camera=name, query=public_query(request.query), source=request.remote or "")
        # What had arrived when a body breaks off: the operator's line names it.
        received: tuple[str, ClipWriter] | None = None

        def naming(refused: Rejected) -> Rejected:
            return refused.of(received[0], received[1].pending_size) if received else refused

        try:
            if request.content_type == "multipart/form-data":
                try:
                    return await self._receive_form(request, sender)
                except (ValueError, AssertionError) as exc:
                    # aiohttp's multipart reader: no boundary, or a body that ends unterminated.
                    raise Rejected(400, f"malformed multipart body: {exc}") from None
            filename = safe_filename(filename_from(request.headers.get(hdrs.CONTENT_DISPOSITION)), _fallback(name))
            content_type = request.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
            async with self._spool.receiving(
                sender, filename=filename, content_type=content_type, span_reader=self._span_readers[name]
            ) as writer:
                received = (filename, writer)
                await self._copy(request.content.readany, writer, request.content_length)
                if request.content_length is not None and writer.pending_size != request.content_length:
                    raise Rejected(400, f"body ended after {writer.pending_size} of {request.content_length} bytes")
                return await writer.commit()
        except Rejected as exc:
            raise naming(exc) from None
        except TimeoutError:
            idle_s = self._config.idle_timeout_s
            raise naming(Rejected(408, f"no data for {idle_s:g} s (ingest.idle_timeout_s)")) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise Rejected(507, "the relay's spool disk is full; the clip was not stored") from None
            if isinstance(exc, ConnectionError):
                raise naming(Rejected(400, f"connection lost while receiving: {exc}")) from None
            log.error("spool_write_failed", error=str(exc), errno=exc.errno)
            raise Rejected(503, "the relay could not store the clip") from None
        except web.HTTPException:
            raise
        except (RequestPayloadError, PayloadEncodingError) as exc:
            # aiohttp's signals of a truncated body or broken chunking.
            raise naming(Rejected(400, f"incomplete body: {exc}")) from None

    async def _receive_form(self, request: web.Request, sender: Sender) -> ClipMeta:
        reader = await request.multipart()
        form = FormFields(self._config.max_body_bytes)
        meta: ClipMeta | None = None
        # One idle deadline over the whole body, fields and file part alike.
        with IdleDeadline(self._config.idle_timeout_s) as idle:
            while (part := await idle.owed(reader.next())) is not None:
                if not isinstance(part, BodyPartReader):
                    raise Rejected(400, "nested multipart bodies are not supported")
                if part.filename is None:
                    await form.read_field(part, idle)
                    continue
                if meta is not None:
                    raise Rejected(400, "send one file part per request")
                filename = safe_filename(part.filename, _fallback(sender.camera))
                content_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
                async with self._spool.receiving(
                    sender, filename=filename, content_type=content_type, span_reader=self._span_readers[sender.camera]
                ) as writer:
                    await self._copy(lambda: part.read_chunk(READ_SIZE), writer, idle=idle, before=form.bytes)
                    form.file_bytes = writer.pending_size
                    # Later parts can only be small fields; read them before committing so a
                    # second file part refuses the whole request.
                    while (extra := await idle.owed(reader.next())) is not None:
                        if not isinstance(extra, BodyPartReader) or extra.filename is not None:
                            raise Rejected(400, "send one file part per request")
                        await form.read_field(extra, idle)
                    meta = await writer.commit(extra_query=form.fields)
        if meta is None:
            raise Rejected(400, "the multipart body has no file part")
        return meta

    async def _copy(
        self,
        read: Callable[[], Awaitable[bytes]],
        writer: ClipWriter,
        declared: int | None = None,
        *,
        idle: IdleDeadline | None = None,
        before: int = 0,
    ) -> None:
        """The body into the spool; ``before``: bytes of the same body already read (a
        form's fields), which count against ingest.max_body_bytes too."""
        limit = self._config.max_body_bytes - before
        # Room is made before bytes are written: all of a declared size up front; for a
        # body of unknown length (chunked), ahead of it as it grows.
        reserved = declared if declared is not None else ROOM_CHECK_BYTES
        await self._ensure_room(reserved, writer)
        with contextlib.ExitStack() as stack:
            idle = idle or stack.enter_context(IdleDeadline(self._config.idle_timeout_s))
            while True:
                idle.waiting()
                chunk = await read()
                idle.arrived()
                if not chunk:
                    if not writer.pending_size:
                        raise Rejected(400, "the body is empty: send the clip as the request body")
                    return
                if writer.pending_size + len(chunk) > limit:
                    raise Rejected(413, f"body exceeds ingest.max_body_bytes ({self._config.max_body_bytes} bytes)")
                while writer.pending_size + len(chunk) > reserved:
                    await self._ensure_room(ROOM_CHECK_BYTES, writer)
                    reserved += ROOM_CHECK_BYTES
                try:
                    await writer.write(chunk)
                except OSError as exc:
                    # The disk filled anyway (another upload, the rest of the gateway):
                    # the policy holds here too. Make room for the whole batch that
                    # failed, and write the same bytes again.
                    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
                    if not full or self._spool.limits.full_policy != "evict_oldest":
                        raise
                    await self._ensure_room(writer.pending_size - writer.size, writer)
                    await writer.flush()

    async def _ensure_room(self, incoming: int, writer: ClipWriter) -> None:
        if not await self._spool.make_room(incoming, writer):
            raise Rejected(
                507,
                "the relay's spool is full (spool.max_bytes / spool.min_free_bytes); the clip was not stored",
            )


def _fallback(device: str) -> str:
    """A name for a clip sent without Content-Disposition: device and arrival time."""
    return f"{device}_{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
