"""An AXIS camera's own API, emulated: a real HTTP(S) server on loopback that answers
as ``shared/vapix.md`` documents, and the camera pushing clips to the relay.

- Digest as devices ask for it (realm ``AXIS_<serial>``, MD5 or SHA-256, qop=auth),
  nonces that expire and come back ``stale=true``; Basic only if told to offer it.
  Implemented here on its own, not with the relay's code, so that both sides cannot
  share a mistake.
- ``basicdeviceinfo.cgi``, ``ntp.cgi`` (synced or not), ``disks/list.cgi`` (a card
  present or not, its status and retention), ``record/list.cgi`` (overlap filters,
  paging, descending by default), ``exportrecording.cgi`` (streamed, chunked, start
  moved back to a key frame, the 200-with-XML errors).
- Recordings split into blocks (``split_s``) and at restarts (a hole between two).
- Its clock is its own: ``clock_offset_s`` ahead of the machine's, in its Date header,
  its recordings, its clips and its file names.
- Faults on demand: ``down`` (every connection cut), ``cut_exports`` (an export broken
  off half-way), ``xml_error`` (the next call answers 200 with an XML error).
- ``push``/``run_schedule``: the camera's "send video clip" action to the relay, with
  chosen clips dropped (their #s still counted, as a device's buffer error does).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web

from tests.support.camera_services import EventServices
from tests.support.device import Answer, Device
from tests.support.footage import clip_bytes, frames_between, matroska

FILENAME_TEMPLATE = "video%y-%m-%d_%H-%M-%S-%f_#s.mkv"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_HASH = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def vapix_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# The forms the Edge storage API documents for times a client sends: whole seconds, or
# up to four fraction digits. Devices answer with six, but none is known to take six.
REQUEST_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,4})?Z$")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def parse_request_time(text: str) -> datetime:
    """A time in a request, as strictly as the documentation states it (ValueError else)."""
    if not REQUEST_TIME.match(text):
        raise ValueError(f"not a documented time form: {text}")
    return parse_time(text)


def device_filename(moment: datetime, sequence: int) -> str:
    """What the template video%y-%m-%d_%H-%M-%S-%f_#s.mkv makes (device clock, UTC here)."""
    return f"video{moment:%y-%m-%d_%H-%M-%S}-{moment.microsecond // 10000:02d}_{sequence:05d}.mkv"


@dataclass
class Recording:
    recording_id: str
    starts: datetime
    stops: datetime | None  # None: still recording (its stoptime is "now")
    kind: str = "continuous"


@dataclass
class Gauge:
    """How many exports stream at once, and the most there ever were."""

    now: int = 0
    peak: int = 0

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            yield
        finally:
            self.now -= 1


@dataclass
class CameraEmulator:
    name: str
    username: str = "root"
    password: str = "camera-pass"
    serial: str = "ACCC8EB3494E"
    algorithm: str = "MD5"  # also "MD5-sess" or "SHA-256"
    # The challenge's forms: older firmware leaves out algorithm (MD5) or qop (RFC 2069's
    # response), some add an opaque the answer must echo.
    challenge_names_algorithm: bool = True
    challenge_qop: bool = True
    opaque: str | None = None
    offer_basic: bool = False
    offer_digest: bool = True
    nonce_lifetime_s: float = 300.0
    # A nonce also goes stale after this many answers (a test need not wait for a clock).
    nonce_max_uses: int | None = None
    clock_offset_s: float = 0.0
    ntp_synced: bool = True
    disk_status: str | None = "OK"  # None: no SD card at all
    cleanup_max_age_days: int = 1  # the card's retention until param.cgi sets another
    frame_bytes: int = 64
    split_s: float = 300.0
    # Faults
    down: bool = False
    cut_exports: int = 0  # this many exports are broken off half-way
    export_pace_s: float = 0.0  # a pause between an export's pieces (a slow card or link)
    exporting: asyncio.Event = field(default_factory=asyncio.Event)  # set while an export streams
    # Exports streaming at once: this camera's own gauge, and any shared with others.
    export_gauges: list[Gauge] = field(default_factory=lambda: [Gauge()])
    xml_error: int | None = None  # the next call to xml_error_on answers 200 with this GeneralError
    xml_error_on: str = "/axis-cgi/record/"
    recordings: list[Recording] = field(default_factory=list)
    services: EventServices = field(default_factory=EventServices)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    exports: list[tuple[str, datetime, datetime, int]] = field(default_factory=list)  # id, start, stop, bytes sent
    abandoned: list[tuple[datetime, datetime, int]] = field(default_factory=list)  # exports the client left
    stale_answers: int = 0
    auth_failures: int = 0
    _nonces: dict[str, float] = field(default_factory=dict)
    _nonce_uses: dict[str, int] = field(default_factory=dict)
    url: str = ""

    # ----- the camera's clock and card -----------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset_s)

    def record(self, starts: datetime, stops: datetime | None = None) -> None:
        """Continuous recording from ``starts`` to ``stops`` (None: on, still), split into
        blocks of ``split_s`` as the device does."""
        at, block, limit = starts, timedelta(seconds=self.split_s), stops or self.now()
        while True:
            end = at + block
            last = end >= limit
            block_id = f"{at:%Y%m%d_%H%M%S}_{os.urandom(2).hex().upper()}_{self.serial}"
            self.recordings.append(Recording(block_id, at, stops if last else end))
            if last:
                return
            at = end

    def _stop_time(self, recording: Recording) -> datetime:
        return recording.stops or self.now()

    # ----- serving --------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(self, ssl_context: ssl.SSLContext | None) -> AsyncIterator[CameraEmulator]:
        app = web.Application(middlewares=[self._faults, self._authenticate])
        app.router.add_post("/axis-cgi/basicdeviceinfo.cgi", self._basicdeviceinfo)
        app.router.add_post("/axis-cgi/ntp.cgi", self._ntp)
        app.router.add_get("/axis-cgi/disks/list.cgi", self._disks)
        app.router.add_route("*", "/axis-cgi/record/list.cgi", self._list)
        app.router.add_get("/axis-cgi/record/export/exportrecording.cgi", self._export)
        app.router.add_post("/vapix/services", self.services.handle)
        app.router.add_get("/axis-cgi/record/continuous/{cgi}", self.services.continuous_cgi)
        app.router.add_get("/axis-cgi/param.cgi", self.services.param_cgi)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        host, port = runner.addresses[0][:2]
        self.url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
        rules = asyncio.create_task(self.services.run_rules(self))
        try:
            yield self
        finally:
            rules.cancel()
            await asyncio.gather(rules, return_exceptions=True)
            await runner.cleanup()

    @web.middleware
    async def _faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.down:
            assert request.transport is not None
            request.transport.abort()  # as a camera that is off or unplugged: no answer
            raise web.HTTPServiceUnavailable
        response = await handler(request)
        return response

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        verdict = self._check(request, header)
        if verdict != "ok":
            if header:
                self.auth_failures += verdict == "wrong"
                self.stale_answers += verdict == "stale"
            return self._challenge(stale=verdict == "stale")
        self.calls.append((request.path, dict(request.query)))
        if self.xml_error is not None and request.path.startswith(self.xml_error_on):
            code, self.xml_error = self.xml_error, None
            return _general_error(code, "emulated error")
        response = await handler(request)
        return response

    def _challenge(self, *, stale: bool) -> web.Response:
        nonce = os.urandom(12).hex()
        self._nonces[nonce] = time.monotonic()
        digest = f'Digest realm="AXIS_{self.serial}", nonce="{nonce}"'
        if self.challenge_names_algorithm:
            digest += f", algorithm={self.algorithm}"
        if self.challenge_qop:
            digest += ', qop="auth"'
        if self.opaque is not None:
            digest += f', opaque="{self.opaque}"'
        if stale:
            digest += ", stale=true"
        response = web.Response(status=401, text="401 Unauthorized")
        if self.offer_digest:
            response.headers.add("WWW-Authenticate", digest)
        if self.offer_basic:
            response.headers.add("WWW-Authenticate", f'Basic realm="AXIS_{self.serial}"')
        return response

    def _check(self, request: web.Request, header: str) -> str:
        if header.startswith("Basic ") and self.offer_basic:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return "ok" if (user, password) == (self.username, self.password) else "wrong"
        if not header.startswith("Digest "):
            return "none"
        fields = dict(
            (k.strip().lower(), v.strip().strip('"'))
            for k, _, v in (part.partition("=") for part in _split_params(header[7:]))
        )
        issued = self._nonces.get(fields.get("nonce", ""))
        if issued is None:
            return "none"  # a nonce it never gave (a restarted camera): a new challenge, not stale
        uses = self._nonce_uses[fields["nonce"]] = self._nonce_uses.get(fields["nonce"], 0) + 1
        if time.monotonic() - issued > self.nonce_lifetime_s or (
            self.nonce_max_uses is not None and uses > self.nonce_max_uses
        ):
            return "stale"
        if fields.get("uri") != request.path_qs or fields.get("qop") != ("auth" if self.challenge_qop else None):
            return "wrong"
        if fields.get("opaque") != self.opaque:
            return "wrong"  # an opaque must come back as it was given, and only then
        h = _HASH[self.algorithm.upper().removesuffix("-SESS")]

        def hx(text: str) -> str:
            return h(text.encode()).hexdigest()

        ha1 = hx(f"{fields.get('username')}:AXIS_{self.serial}:{self.password}")
        if self.algorithm.upper().endswith("-SESS"):
            ha1 = hx(f"{ha1}:{fields['nonce']}:{fields.get('cnonce')}")
        ha2 = hx(f"{request.method}:{fields['uri']}")
        if self.challenge_qop:
            expected = hx(f"{ha1}:{fields['nonce']}:{fields.get('nc')}:{fields.get('cnonce')}:auth:{ha2}")
        else:
            expected = hx(f"{ha1}:{fields['nonce']}:{ha2}")
        ok = fields.get("username") == self.username and fields.get("response") == expected
        return "ok" if ok else "wrong"

    def _date(self) -> dict[str, str]:
        return {"Date": self.now().strftime("%a, %d %b %Y %H:%M:%S GMT")}

    # ----- the CGIs -------------------------------------------------------

    async def _basicdeviceinfo(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("method") != "getAllProperties":
            return web.json_response({"apiVersion": "1.0", "error": {"code": 2002, "message": "method not supported"}})
        properties = {"SerialNumber": self.serial, "ProdNbr": "P3245-V", "Version": "11.8.64", "Brand": "AXIS"}
        return web.json_response(
            {"apiVersion": "1.0", "method": "getAllProperties", "data": {"propertyList": properties}},
            headers=self._date(),
        )

    async def _ntp(self, request: web.Request) -> web.Response:
        client = {"enabled": True, "synced": self.ntp_synced, "timeOffset": 0 if self.ntp_synced else 99999}
        return web.json_response(
            {"apiVersion": "1.0", "method": "getNTPInfo", "data": {"client": client}}, headers=self._date()
        )

    async def _disks(self, request: web.Request) -> web.Response:
        if self.disk_status is None:
            return _xml('<root><disks numberofdisks="0"></disks></root>', self._date())
        disk = (
            f'<disk diskid="SD_DISK" name="" totalsize="31154688" freesize="20000000" cleanupmaxage="'
            f'{self.retention_days}" cleanuppolicy="fifo" full="no" readonly="no" status="{self.disk_status}" '
            'filesystem="ext4" group="S0" requiredfilesystem="none" encryptionenabled="false"/>'
        )
        return _xml(f'<root><disks numberofdisks="1">{disk}</disks></root>', self._date())

    @property
    def retention_days(self) -> int:
        """The card's CleanupMaxAge, as param.cgi last set it."""
        return int(self.services.parameters.get("Storage.S0.CleanupMaxAge", self.cleanup_max_age_days))

    def _card(self) -> list[Recording]:
        if self.disk_status not in ("OK", "connected"):
            return []
        oldest = self.now() - timedelta(days=self.retention_days or 3650)
        return [r for r in self.recordings if self._stop_time(r) > oldest]

    async def _list(self, request: web.Request) -> web.Response:
        q = request.query
        found = self._card()
        if q.get("recordingid", "all") != "all":
            found = [r for r in found if r.recording_id == q["recordingid"]]
        on_card = len(found)
        try:
            if "starttime" in q:
                found = [r for r in found if self._stop_time(r) > parse_request_time(q["starttime"])]
            if "stoptime" in q:
                found = [r for r in found if r.starts < parse_request_time(q["stoptime"])]
        except ValueError:
            return _general_error(20, "Invalid request")
        found.sort(key=lambda r: r.starts, reverse=q.get("sortorder", "descending") != "ascending")
        first = int(q.get("startatresultnumber", "0"))
        page = found[first : first + int(q.get("maxnumberofresults", "1000"))]
        items = "".join(
            f'<recording diskid="SD_DISK" recordingid="{r.recording_id}" starttime="{vapix_time(r.starts)}" '
            f'starttimelocal="{vapix_time(r.starts)}" stoptime="{vapix_time(self._stop_time(r))}" '
            f'stoptimelocal="{vapix_time(self._stop_time(r))}" recordingtype="{r.kind}" eventid="continuous" '
            f'eventtrigger="continuous" recordingstatus="{"recording" if r.stops is None else "completed"}" '
            'source="1" locked="No"><video mimetype="video/x-h264" width="1920" height="1080" framerate="10:1"/>'
            "</recording>"
            for r in page
        )
        return _xml(
            # As devices count: numberofrecordings matches the query, totalnumberofrecordings
            # is every recording on the disk.
            f'<root><recordings totalnumberofrecordings="{on_card}" numberofrecordings="{len(found)}">'
            f"{items}</recordings></root>",
            self._date(),
        )

    async def _export(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("schemaversion") != "1":
            return _general_error(40, "Unsupported schema version")
        recording = next((r for r in self._card() if r.recording_id == q.get("recordingid")), None)
        if recording is None:
            return _general_error(110, "Recording not found")
        try:
            starts, stops = parse_request_time(q["starttime"]), parse_request_time(q["stoptime"])
        except (KeyError, ValueError):
            return _general_error(120, "Invalid start time")
        if starts >= stops:
            return _general_error(140, "Start time is after stop time")
        if starts >= self._stop_time(recording) or starts < recording.starts - timedelta(seconds=1):
            return _general_error(150, "Start time is outside the recording")
        if stops > self._stop_time(recording) + timedelta(seconds=1):
            return _general_error(160, "Stop time is outside the recording")
        frames = frames_between(max(starts, recording.starts), stops, snap_to_key=True)
        response = web.StreamResponse(
            headers={
                "Content-Type": "video/x-matroska",
                "Content-Disposition": f'attachment; filename="{starts:%Y%m%d_%H%M%S}_{stops:%Y%m%d_%H%M%S}.mkv"',
                **self._date(),
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        pieces = list(matroska(self.name, frames, frame_bytes=self.frame_bytes))
        with contextlib.ExitStack() as running:
            for gauge in self.export_gauges:
                running.enter_context(gauge.counting())
            return await self._stream_export(request, response, recording, starts, stops, pieces)

    async def _stream_export(
        self,
        request: web.Request,
        response: web.StreamResponse,
        recording: Recording,
        starts: datetime,
        stops: datetime,
        pieces: list[bytes],
    ) -> web.StreamResponse:
        cut = self.cut_exports > 0
        sent = 0
        self.exporting.set()
        for index, piece in enumerate(pieces):
            if self.export_pace_s:
                await asyncio.sleep(self.export_pace_s)
            if cut and index >= len(pieces) // 2:
                self.cut_exports -= 1
                self.exports.append((recording.recording_id, starts, stops, -sent))
                assert request.transport is not None
                request.transport.abort()  # broken off half-way: no terminating chunk
                return response
            try:
                await response.write(piece)
            except ConnectionError:
                self.abandoned.append((starts, stops, sent))  # the client went away mid-export
                return response
            sent += len(piece)
        await response.write_eof()
        self.exports.append((recording.recording_id, starts, stops, sent))
        return response

    # ----- pushing clips, as the camera's action rule does ----------------

    async def push(
        self, device: Device, path: str, starts: datetime, ends: datetime, sequence: int, *, duration: bool = True
    ) -> Answer:
        body = clip_bytes(self.name, starts, ends, frame_bytes=self.frame_bytes, duration=duration)
        return await device.post_clip(path, body, filename=device_filename(starts, sequence))

    async def run_schedule(
        self, device: Device, path: str, starts: datetime, count: int, cadence_s: float, drop: Iterable[int] = ()
    ) -> list[int]:
        """Push ``count`` clips of ``cadence_s`` from ``starts`` (sequence 1, 2, ...), except
        the numbers in ``drop`` (produced, never delivered); returns the numbers sent."""
        dropped, sent = set(drop), []
        for n in range(1, count + 1):
            if n in dropped:
                continue
            begin = starts + timedelta(seconds=(n - 1) * cadence_s)
            answer = await self.push(device, path, begin, begin + timedelta(seconds=cadence_s), n)
            assert answer.status == 200, (answer.status, answer.body)
            sent.append(n)
        return sent


def _split_params(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p.strip()]


def _xml(text: str, headers: dict[str, str]) -> web.Response:
    return web.Response(text='<?xml version="1.0" encoding="UTF-8"?>' + text, content_type="text/xml", headers=headers)


def _general_error(code: int, description: str) -> web.Response:
    # As the device does: HTTP 200, text/xml, the error in the body.
    return web.Response(
        text=(
            '<?xml version="1.0" encoding="UTF-8"?><ExportRecordingResponse><GeneralError>'
            f"<ErrorCode>{code}</ErrorCode><ErrorDescription>{description}</ErrorDescription>"
            "</GeneralError></ExportRecordingResponse>"
        ),
        content_type="text/xml",
    )
