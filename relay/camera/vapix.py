"""A client of one camera's own API (VAPIX): device facts, its clock, its SD card, the
recordings on it, and exports of any range as Matroska.

Every call has a deadline (``camera.timeout_s`` without an answer, or without a byte
of an export). Failures are ``CameraError`` with a reason an operator can act on and
whether trying again later can help (``transient``): an unreachable camera or one that
answers nonsense is retried by the caller with backoff, and never stops the relay.
The camera's 200-with-an-error answers (JSON ``error``, XML ``GeneralError``,
``result="ERROR"``) are recognised and named, never taken for data. An export is
streamed to the caller's sink chunk by chunk, never held in memory.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import structlog
from yarl import URL

from relay.camera import soap
from relay.camera.answers import (
    CameraError,
    Clock,
    Disk,
    Export,
    Recording,
    Sink,
    as_bool,
    as_int,
    continuous_profile,
    general_error,
    json_answer,
    parse_disk,
    recordings_page,
    request_time,
    xml_answer,
)
from relay.camera.digest import ChallengeError, DigestChallenge, basic_authorization, choose, digest_authorization
from relay.config import CameraConfig

log = structlog.get_logger("relay.camera")

# Recordings asked for per list.cgi page.
PAGE_SIZE = 100
# What list.cgi may page through for one range: far more than a day of 5-minute blocks.
MAX_PAGES = 50
READ_CHUNK = 256 * 1024
# Small answers (XML, JSON) are read whole; anything longer is not a VAPIX answer.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


def client_ssl(config: CameraConfig) -> ssl.SSLContext | bool:
    if not config.url.startswith("https:"):
        return True  # no TLS to configure
    if not config.verify_tls:
        return False
    context = ssl.create_default_context(cafile=str(config.ca_bundle) if config.ca_bundle else None)
    return context


class VapixClient:
    def __init__(self, name: str, config: CameraConfig, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.config = config
        self._session = session
        self._challenge: DigestChallenge | str | None = None
        # The camera's clock minus ours, as its last Date header showed it.
        self.date_offset_s: float | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, name: str, config: CameraConfig) -> AsyncIterator[VapixClient]:
        connector = aiohttp.TCPConnector(ssl=client_ssl(config), limit=2)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
            yield cls(name, config, session)

    # ----- the calls ------------------------------------------------------

    async def device_info(self) -> dict[str, str]:
        answer = await self._json("basicdeviceinfo.cgi", "getAllProperties")
        properties = answer.get("propertyList")
        if not isinstance(properties, dict):
            raise self._nonsense("basicdeviceinfo.cgi", "no propertyList in the answer")
        return {str(k): str(v) for k, v in properties.items()}

    async def clock(self) -> Clock:
        """Whether the camera's clock is NTP-synced, and how far it is from ours."""
        try:
            data = await self._json("ntp.cgi", "getNTPInfo")
        except CameraError as exc:
            if exc.transient:
                raise
            data = {}  # no NTP API (old firmware, or not an administrator): only the Date header
        client = data.get("client") if isinstance(data.get("client"), dict) else {}
        assert isinstance(client, dict)
        return Clock(
            ntp_enabled=as_bool(client.get("enabled")),
            synced=as_bool(client.get("synced")),
            ntp_offset_ms=float(client["timeOffset"]) if isinstance(client.get("timeOffset"), int | float) else None,
            offset_s=self.date_offset_s,
        )

    async def disks(self) -> list[Disk]:
        root = await self._xml("disks/list.cgi", {"diskid": "all"})
        return [parse_disk(disk) for disk in root.iter("disk")]

    async def recordings(self, disk: str, starts: datetime, stops: datetime) -> list[Recording]:
        """The recordings on ``disk`` that overlap the range, oldest first (every page)."""
        found: dict[str, Recording] = {}
        at = 0
        for _ in range(MAX_PAGES):
            params = {
                "recordingid": "all",
                "diskid": disk,
                "starttime": request_time(starts),
                "stoptime": request_time(stops, up=True),
                "maxnumberofresults": str(PAGE_SIZE),
                "startatresultnumber": str(at),
                "sortorder": "ascending",
            }
            root = await self._xml("record/list.cgi", params)
            try:
                items, matches = recordings_page(root, disk)
            except (KeyError, ValueError) as exc:
                raise self._nonsense("record/list.cgi", f"a recording without a usable id or time ({exc})") from None
            for recording in items:
                found[recording.recording_id] = recording
            at += len(items)
            # numberofrecordings counts the matches; the disk's total would cost a call more.
            if not items or at >= matches:
                break
        return sorted(found.values(), key=lambda r: r.starts)

    async def export(self, recording: Recording, starts: datetime, stops: datetime, sink: Sink) -> Export:
        """Stream the range of ``recording`` as Matroska into ``sink``; CameraError (with
        the GeneralError code) when the camera answers with an error instead."""
        call = "record/export/exportrecording.cgi"
        params = {
            "schemaversion": "1",
            "recordingid": recording.recording_id,
            "diskid": recording.disk_id,
            "exportformat": "matroska",
            "starttime": request_time(starts),
            "stoptime": request_time(stops, up=True),
        }
        async with self._request("GET", call, params=params, streaming=True) as answer:
            kind = answer.content_type.lower()
            if kind != "video/x-matroska":
                # Errors come as 200 text/xml; check before storing a byte.
                body = await self._small_body(answer, call)
                raise self._export_error(call, kind, body)
            written = 0
            try:
                async for chunk in answer.content.iter_chunked(READ_CHUNK):
                    await sink(chunk)
                    written += len(chunk)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise CameraError(
                    self.name, call, f"the export broke off after {written} bytes ({_what(exc)})", transient=True
                ) from None
            if answer.content_length is not None and written != answer.content_length:
                raise CameraError(
                    self.name,
                    call,
                    f"the export ended after {written} of {answer.content_length} bytes",
                    transient=True,
                )
            disposition = answer.content_disposition
            return Export(filename=disposition.filename if disposition else None, bytes=written)

    # ----- set-up: parameters, continuous recording, event and action services

    async def set_parameters(self, values: dict[str, str]) -> None:
        async with self._request("GET", "param.cgi", params={"action": "update", **values}) as answer:
            text = (await self._small_body(answer, "param.cgi")).decode(errors="replace").strip()
        if text != "OK":
            raise CameraError(self.name, "param.cgi", f"update refused: {text[:200]}", transient=False)

    async def continuous_recordings(self) -> list[dict[str, str]]:
        """The continuous recording profiles (``profile``, ``diskid``, ``options``)."""
        root = await self._xml("record/continuous/listconfiguration.cgi", {})
        return [dict(e.attrib) for e in root.iter() if "profile" in e.attrib]

    async def add_continuous_recording(self, disk: str, options: str) -> str:
        """A continuous recording profile to ``disk`` with the stream ``options``; the
        camera's refusal (CameraError) carries its own errormsg."""
        root = await self._xml("record/continuous/addconfiguration.cgi", {"diskid": disk, "options": options})
        profile = continuous_profile(root)
        if not profile:
            raise self._nonsense("record/continuous/addconfiguration.cgi", "no profile in the answer")
        return profile

    async def soap(self, body: str) -> ET.Element:
        """One call of the event and action services; SoapFault names the operation."""
        operation = soap.operation_of(body)
        # As Axis' own set-up scripts send it.
        message = (soap.envelope(body), "application/xml")
        async with self._request("POST", "/vapix/services", body=message, error_bodies=True) as answer:
            raw = await self._small_body(answer, operation)
            status = answer.status
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            raise self._nonsense(operation, f"HTTP {status}, not SOAP: {raw[:80]!r}") from None
        soap.check_fault(operation, root)
        if status != 200:
            raise CameraError(self.name, operation, f"HTTP {status} without a SOAP fault", transient=status >= 500)
        return root

    # ----- answers --------------------------------------------------------

    async def _json(self, cgi: str, method: str) -> dict[str, Any]:
        body = {"apiVersion": "1.0", "context": "axis-relay", "method": method}
        async with self._request("POST", cgi, json_body=body) as answer:
            raw = await self._small_body(answer, cgi)
        return json_answer(self.name, cgi, raw)

    async def _xml(self, cgi: str, params: dict[str, str]) -> ET.Element:
        async with self._request("GET", cgi, params=params) as answer:
            raw = await self._small_body(answer, cgi)
        return xml_answer(self.name, cgi, raw)

    def _export_error(self, call: str, kind: str, body: bytes) -> CameraError:
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return self._nonsense(call, f"answered {kind or 'no content type'} instead of video/x-matroska")
        if root.find(".//ErrorCode") is None:
            return self._nonsense(call, f"answered {kind or 'no content type'} instead of video/x-matroska")
        code = as_int(root.findtext(".//ErrorCode"))
        reason = general_error(code, root.findtext(".//ErrorDescription"))
        return CameraError(self.name, call, reason, transient=code == 10, code=code)

    async def _small_body(self, answer: aiohttp.ClientResponse, call: str) -> bytes:
        body = await answer.content.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            raise self._nonsense(call, f"an answer over {MAX_ANSWER_BYTES} bytes")
        return body

    def _nonsense(self, call: str, what: str) -> CameraError:
        # Transient: a camera mid-upgrade or a proxy's error page passes; retried with backoff.
        return CameraError(self.name, call, f"the camera answered nonsense: {what}", transient=True)

    # ----- requests, with authentication ----------------------------------

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        cgi: str,
        *,
        params: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        body: tuple[bytes, str] | None = None,
        streaming: bool = False,
        error_bodies: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request with authentication; ``cgi`` under /axis-cgi/, or a whole path.
        ``error_bodies``: an error status with a body is the caller's to read (SOAP faults)."""
        path = cgi if cgi.startswith("/") else f"/axis-cgi/{cgi}"
        target = path + (f"?{urlencode(params, quote_via=quote)}" if params else "")
        url = URL(self.config.url + target, encoded=True)
        timeout = self.config.timeout_s
        limits = (
            aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
            if streaming
            else aiohttp.ClientTimeout(total=timeout)
        )
        data, kind = (json.dumps(json_body).encode(), "application/json") if json_body is not None else (None, "")
        if body is not None:
            data, kind = body
        headers = {"Content-Type": kind} if data is not None else {}
        password = self.config.password.get_secret_value()
        # A stale nonce gets one new try, a first challenge another: three at the most.
        fresh = False  # whether the challenge answered came in this very exchange
        for _ in range(3):
            if isinstance(self._challenge, DigestChallenge):
                headers["Authorization"] = digest_authorization(
                    self._challenge, self.config.username, password, method, target
                )
            elif self._challenge == "basic":
                headers["Authorization"] = basic_authorization(self.config.username, password)
            sent = time.time()
            try:
                answer = await self._session.request(
                    method, url, data=data, headers=headers, timeout=limits, allow_redirects=False
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise CameraError(self.name, cgi, f"unreachable ({_what(exc)})", transient=True) from None
            try:
                self._note_date(answer, sent)
                if answer.status == 401:
                    self._rechallenge(answer, cgi, answered="Authorization" in headers, fresh=fresh)
                    answer.release()
                    fresh = True
                    continue
                if not (error_bodies and answer.status in (400, 500)):
                    self._check_status(answer, cgi)
                yield answer
                return
            finally:
                answer.release()
        raise CameraError(self.name, cgi, "the camera kept asking for authentication", transient=True)

    def _rechallenge(self, answer: aiohttp.ClientResponse, cgi: str, *, answered: bool, fresh: bool) -> None:
        """Take the new challenge, to answer it; a wrong login (CameraError) when the
        camera refused an answer to a challenge it had just sent, and did not say stale."""
        try:
            challenge = choose(answer.headers.getall("WWW-Authenticate", []))
        except ChallengeError as exc:
            raise CameraError(self.name, cgi, str(exc), transient=False) from None
        self._challenge = challenge
        if not answered:
            return
        if isinstance(challenge, DigestChallenge) and challenge.stale:
            # An expired nonce: a new one to answer, not a wrong password (a CLI logs this
            # line to stderr: --json output stays one JSON document).
            log.debug("camera_nonce_stale", camera=self.name)
            return
        if not fresh:
            return  # a nonce kept from an earlier call that the camera forgot (it restarted)
        raise CameraError(
            self.name,
            cgi,
            f"wrong username or password (user {self.config.username!r}); fix devices.{self.name}.camera.username "
            f"and its password (or AXIS_RELAY_CAMERA_..._PASSWORD)",
            transient=False,
        )

    def _check_status(self, answer: aiohttp.ClientResponse, cgi: str) -> None:
        if answer.status == 200:
            return
        if answer.status == 401:
            raise CameraError(self.name, cgi, "authentication refused", transient=False)
        if answer.status == 403:
            raise CameraError(
                self.name,
                cgi,
                f"403: user {self.config.username!r} may not call it; give the account the administrator "
                "or operator role on the camera",
                transient=False,
            )
        if answer.status == 404:
            raise CameraError(
                self.name, cgi, "404: the camera does not offer this API (firmware too old?)", transient=False
            )
        transient = answer.status >= 500 or answer.status in (408, 429)
        raise CameraError(self.name, cgi, f"HTTP {answer.status} {answer.reason or ''}".strip(), transient=transient)

    def _note_date(self, answer: aiohttp.ClientResponse, sent: float) -> None:
        date = answer.headers.get("Date")
        if not date:
            return
        with contextlib.suppress(TypeError, ValueError, IndexError):
            theirs = email.utils.parsedate_to_datetime(date).timestamp()
            # Half-way through the exchange, and half a second for the header's rounding down.
            self.date_offset_s = round(theirs + 0.5 - (sent + time.time()) / 2, 1)


def _what(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
