"""When a clip's footage starts and ends, and where the relay learnt it.

Gap detection compares clips' time spans, so each clip's span is worked out once, when
it is made durable, from the best source it carries:

1. ``matroska``: the Segment Info of the Matroska header, ``DateUTC`` (the moment of
   timestamp 0) and ``Duration``. Only the header is read (a few hundred bytes, also
   for a streamed clip whose Segment has no size), never the clip.
2. ``filename``: the time stamp in the file name, parsed with the device's file-name
   template (``video%y-%m-%d_%H-%M-%S-%f_#s.mkv``) in its zone, or the ``%z`` it carries.
3. ``arrival``: when the relay received it. A device streams a clip at real-time pace
   through its post-buffer, so a clip's last byte arrives about when its footage ends:
   a start without a duration ends at arrival.

The ledger keeps the source beside each time (``starts_source``, ``ends_source``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import ebmlite

from relay.spool.clip import ClipMeta
from relay.templates import FilenameTemplate

TimeSource = Literal["matroska", "filename", "arrival", "export"]

# A header is at the front; past this many bytes without Segment Info, there is none.
HEADER_SCAN_BYTES = 256 * 1024
# A clip claiming to be longer than this is not believed (a broken or foreign header).
LONGEST_CLIP = timedelta(hours=6)

# A header time further than this from the arrival is garbage (DateUTC 0 is 2001).
PLAUSIBLE = timedelta(days=30)


@functools.cache
def _matroska_schema() -> ebmlite.core.Schema:
    # The bundled schema, parsed once per process on first use.
    return ebmlite.loadSchema("matroska.xml")


@dataclass(frozen=True)
class ClipTimes:
    starts_at: datetime
    ends_at: datetime
    starts_source: TimeSource
    ends_source: TimeSource


@dataclass(frozen=True)
class MatroskaHeader:
    date_utc: datetime | None
    duration: timedelta | None


def read_matroska_header(path: Path) -> MatroskaHeader | None:
    """``DateUTC`` and ``Duration`` from a Matroska file's Segment Info; None when the
    file is not Matroska or has no Segment Info near its start."""
    try:
        with open(path, "rb") as f:
            document = _matroska_schema().load(f)
            for element in document:
                if element.name == "Segment":
                    return _segment_info(element)
                if element.offset > HEADER_SCAN_BYTES:
                    return None
    except (OSError, ValueError, TypeError, KeyError, IndexError, OverflowError, EOFError):
        # Anything a broken or foreign file makes the parser raise: no header, not a failure.
        return None
    return None


def _segment_info(segment: ebmlite.core.MasterElement) -> MatroskaHeader | None:
    for child in segment:
        if child.offset - segment.offset > HEADER_SCAN_BYTES:
            return None
        if child.name != "Info":
            continue
        values = {item.name: item.value for item in child}
        scale_ns = int(values.get("TimecodeScale", 1_000_000))
        date = values.get("DateUTC")
        duration = values.get("Duration")
        return MatroskaHeader(
            date_utc=date.replace(tzinfo=UTC) if isinstance(date, datetime) else None,
            duration=timedelta(microseconds=float(duration) * scale_ns / 1000) if duration else None,
        )
    return None


def clip_times(
    path: Path, filename: str, received: datetime, template: FilenameTemplate | None, zone: str
) -> ClipTimes:
    """The clip's span from the best source it has (this module's docstring)."""
    header = read_matroska_header(path)
    start: datetime | None = None
    start_source: TimeSource = "arrival"
    if header and header.date_utc and abs(header.date_utc - received) < PLAUSIBLE:
        start, start_source = header.date_utc, "matroska"
    elif template and (named := template.moment(filename, zone)):
        start, start_source = named, "filename"
    if start is None:
        return ClipTimes(received, received, "arrival", "arrival")
    if header and header.duration and timedelta(0) < header.duration < LONGEST_CLIP:
        return ClipTimes(start, start + header.duration, start_source, "matroska")
    end = received if timedelta(0) <= received - start < LONGEST_CLIP else start
    return ClipTimes(start, end, start_source, "arrival")


def device_span_reader(filename_template: str | None, zone: str) -> Callable[[Path, ClipMeta], ClipTimes]:
    """What reads the span of one device's pushed clips (its file-name template and zone)."""
    template = FilenameTemplate(filename_template) if filename_template else None

    def read_span(path: Path, meta: ClipMeta) -> ClipTimes:
        return clip_times(path, meta.filename, meta.received, template, zone)

    return read_span
