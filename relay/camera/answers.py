"""What a camera says: the facts and errors of its answers (VAPIX), as the relay uses them.

Parsing only; ``relay.camera.vapix`` asks. Times are UTC; the camera's 200-with-an-error
answers become ``CameraError`` with the documented meaning of their code.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

# A camera clock off by less than this (from its Date header, whole seconds) is rounding,
# not a wrong clock: back-fill and `camera check` both go by it.
CLOCK_TOLERANCE_S = 2.0

# exportrecording.cgi's GeneralError codes (vapix.md).
EXPORT_ERRORS = {
    10: "the camera is still processing (try again)",
    20: "invalid request",
    40: "unsupported schema version",
    110: "recording not found",
    120: "invalid start time",
    130: "invalid stop time",
    140: "start time is after stop time",
    150: "the start time is outside the recording",
    160: "the stop time is outside the recording",
    170: "unsupported export format",
    180: "invalid export format",
}
# Codes that mean the footage asked for is not on the card (not worth asking again).
NOT_RECORDED = {110, 150, 160}


class CameraFailure(Exception):
    """Any call to a camera that failed (a CGI answer, a SOAP fault): ``call`` names it,
    ``reason`` says why and what to do, ``transient`` whether the same call may work later."""

    call: str
    reason: str
    transient: bool


class CameraError(CameraFailure):
    """A CGI call failed, or the camera could not be reached; ``transient`` is True when
    the same call may work later (unreachable, timeout, busy, 5xx)."""

    def __init__(self, camera: str, call: str, reason: str, *, transient: bool, code: int | None = None) -> None:
        super().__init__(f"{camera}: {call}: {reason}")
        self.camera = camera
        self.call = call
        self.reason = reason
        self.transient = transient
        self.code = code


@dataclass(frozen=True)
class Disk:
    disk_id: str
    status: str
    total_kb: int
    free_kb: int
    # The card's retention: recordings older than this many days are deleted (0 = none set).
    cleanup_max_age_days: int
    cleanup_policy: str
    full: bool
    group: str = ""  # its parameter group, Storage.<group>.* (S0 for the first card)

    @property
    def usable(self) -> bool:
        return self.status.lower() in ("ok", "connected")


@dataclass(frozen=True)
class Recording:
    recording_id: str
    disk_id: str
    starts: datetime
    stops: datetime
    status: str  # "recording" while it goes on (its stoptime is then "now")
    kind: str  # "continuous" or an event recording


@dataclass(frozen=True)
class Clock:
    ntp_enabled: bool | None
    synced: bool | None  # None when the camera does not say (old firmware, no NTP API)
    ntp_offset_ms: float | None
    # The camera's clock minus the relay's, from its Date header (whole seconds).
    offset_s: float | None


@dataclass(frozen=True)
class Export:
    filename: str | None
    bytes: int


Sink = Callable[[bytes], Awaitable[None]]


def request_time(moment: datetime, *, up: bool = False) -> str:
    """UTC ISO 8601 in whole seconds, a form the Edge storage API documents for what
    list.cgi and exportrecording.cgi take (devices answer with six fraction digits, but
    none is known to take them). A start is floored and a stop (``up``) ceiled, so the
    range asked for still covers the one meant."""
    moment = moment.astimezone(UTC)
    whole = moment.replace(microsecond=0)
    if up and whole < moment:
        whole += timedelta(seconds=1)
    return whole.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_vapix_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def general_error(code: int, description: str | None) -> str:
    """A GeneralError as an operator reads it: the code, what it is documented to mean,
    and the camera's own words."""
    meaning = EXPORT_ERRORS.get(code, "undocumented error")
    said = f": {description}" if description and description.lower() not in meaning.lower() else ""
    return f"error {code} ({meaning}){said}"


def as_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def as_int(value: object, default: int = 0) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return default


# How far past the relay's now an ongoing recording without a stoptime is taken to reach
# (the camera's clock may be ahead): exports are cut to the gap anyway.
ONGOING = timedelta(hours=1)


def _nonsense(camera: str, call: str, what: str) -> CameraError:
    # Transient: a camera mid-upgrade or a proxy's error page passes; retried with backoff.
    return CameraError(camera, call, f"the camera answered nonsense: {what}", transient=True)


def xml_answer(camera: str, call: str, raw: bytes) -> ET.Element:
    """An XML answer, or CameraError for the camera's refusal: a ``GeneralError``
    anywhere, or ``result="ERROR"`` on any element (devices put it on a child of
    <root>), with the device's own ``errormsg``."""
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise _nonsense(camera, call, f"not XML ({exc}): {raw[:80]!r}") from None
    if (general := root.find(".//GeneralError")) is not None or root.tag == "GeneralError":
        general = general if general is not None else root
        code = as_int(general.findtext("ErrorCode"))
        reason = general_error(code, general.findtext("ErrorDescription"))
        raise CameraError(camera, call, reason, transient=code == 10, code=code)
    for element in root.iter():
        if element.attrib.get("result", "").upper() == "ERROR":
            said = element.attrib.get("errormsg", "").strip() or "no reason given"
            raise CameraError(camera, call, f"the camera refused: {said}", transient=False)
    return root


def json_answer(camera: str, call: str, raw: bytes) -> dict[str, Any]:
    """The ``data`` of a JSON API answer, or CameraError for its ``error``."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise _nonsense(camera, call, f"not JSON: {raw[:80]!r}") from None
    if not isinstance(parsed, dict):
        raise _nonsense(camera, call, "the answer is not a JSON object")
    if isinstance(error := parsed.get("error"), dict):
        code = as_int(error.get("code"))
        raise CameraError(camera, call, f"error {code}: {error.get('message', '')}".strip(), transient=False, code=code)
    data = parsed.get("data")
    if not isinstance(data, dict):
        raise _nonsense(camera, call, "no data in the answer")
    return data


def continuous_profile(root: ET.Element) -> str:
    """The profile an addconfiguration.cgi answer created; "" if none succeeded (an
    error element may carry a profile attribute too: it is never read)."""
    for element in root.iter():
        if "profile" in element.attrib and element.attrib.get("result", "OK").upper() == "OK":
            return element.attrib["profile"]
    return ""


def recordings_page(root: ET.Element, disk: str) -> tuple[list[Recording], int]:
    """One page of record/list.cgi: its recordings, and how many match the query in all
    (``numberofrecordings``; ``totalnumberofrecordings`` is every recording on the disk).
    KeyError or ValueError for a recording without a usable id or time."""
    page = root.find("recordings")
    if page is None:
        raise ValueError("no <recordings> in the answer")
    items = [parse_recording(item, disk) for item in page.findall("recording")]
    return items, as_int(page.attrib.get("numberofrecordings"), len(items))


def parse_disk(element: ET.Element) -> Disk:
    """One ``<disk>`` of disks/list.cgi (sizes in kB, retention in days)."""
    a = element.attrib
    return Disk(
        disk_id=a.get("diskid", ""),
        status=a.get("status", "unknown"),
        total_kb=as_int(a.get("totalsize")),
        free_kb=as_int(a.get("freesize")),
        cleanup_max_age_days=as_int(a.get("cleanupmaxage")),
        cleanup_policy=a.get("cleanuppolicy", ""),
        full=a.get("full", "no").lower() == "yes",
        group=a.get("group", ""),
    )


def parse_recording(element: ET.Element, disk: str) -> Recording:
    """One ``<recording>`` of record/list.cgi; KeyError or ValueError without an id or time."""
    a = element.attrib
    status = a.get("recordingstatus", "")
    starts = parse_vapix_time(a["starttime"])
    if a.get("stoptime"):
        stops = parse_vapix_time(a["stoptime"])
    elif status == "recording":
        stops = datetime.now(UTC) + ONGOING  # still recording: it holds footage up to now
    else:
        stops = starts
    return Recording(a["recordingid"], a.get("diskid", disk), starts, stops, status, a.get("recordingtype", ""))


def retention_start(disk: Disk, now: datetime) -> datetime | None:
    """The oldest moment the card still holds, by its retention (None: no limit set)."""
    return now - timedelta(days=disk.cleanup_max_age_days) if disk.cleanup_max_age_days > 0 else None
