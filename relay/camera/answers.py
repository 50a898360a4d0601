"""What a camera says: the facts and errors of its answers (VAPIX), as the relay uses them.

Parsing only; ``relay.camera.vapix`` asks. Times are UTC; the camera's 200-with-an-error
answers become ``CameraError`` with the documented meaning of their code.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


class CameraError(Exception):
    """A call to a camera failed: ``reason`` says why and what to do; ``transient`` is
    True when the same call may work later (unreachable, timeout, busy, 5xx)."""

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


def vapix_time(moment: datetime) -> str:
    """UTC ISO 8601 as list.cgi and exportrecording.cgi take it, with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
