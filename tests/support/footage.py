"""Footage the emulated cameras make: Matroska whose bytes depend only on the camera
and the time range, so a test can tell exactly which moments reached S3.

Every tenth of a second of a camera's life is one frame, ``AXISEMU:<camera>:<index>``
padded to ``frame_bytes``, where index = camera time in tenths of a second since the
Unix epoch; a key frame every whole second. A clip holds a Matroska header (EBML,
a Segment of unknown size as a live stream has, Segment Info with DateUTC and,
optionally, Duration) and one Cluster per second of SimpleBlocks. Written by hand here
(not with the relay's reader library), so reader and writer cannot share a mistake.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

FPS = 10
EPOCH_2001 = datetime(2001, 1, 1, tzinfo=UTC)
_FRAME = re.compile(rb"AXISEMU:([A-Za-z0-9_.-]+):(\d{12})")


def _size(n: int) -> bytes:
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return ((1 << (7 * length)) | n).to_bytes(length, "big")
    raise ValueError(n)


def element(element_id: bytes, payload: bytes) -> bytes:
    return element_id + _size(len(payload)) + payload


def frame_index(moment: datetime) -> float:
    return moment.timestamp() * FPS


def frame_time(index: int) -> datetime:
    return datetime.fromtimestamp(index / FPS, UTC)


def frame(camera: str, index: int, frame_bytes: int) -> bytes:
    marker = f"AXISEMU:{camera}:{index:012d}".encode()
    return marker + b"." * max(0, frame_bytes - len(marker))


def frames_between(starts: datetime, ends: datetime, *, snap_to_key: bool) -> range:
    """Frame indexes of [starts, ends); an export moves the start back to a key frame."""
    first = math.ceil(frame_index(starts) - 1e-6)
    if snap_to_key:
        first -= first % FPS
    return range(first, math.ceil(frame_index(ends) - 1e-6))


def matroska(
    camera: str, frames: range, *, frame_bytes: int = 64, duration: bool = True, date: bool = True
) -> Iterable[bytes]:
    """The clip, in pieces (header, then one Cluster a second), for streaming."""
    start = frame_time(frames.start)
    info = element(b"\x2a\xd7\xb1", (1_000_000).to_bytes(3, "big"))  # TimecodeScale: ms
    if date:
        ns = round((start - EPOCH_2001) / timedelta(microseconds=1)) * 1000
        info += element(b"\x44\x61", ns.to_bytes(8, "big", signed=True))  # DateUTC
    if duration:
        info += element(b"\x44\x89", struct.pack(">d", len(frames) * 1000 / FPS))  # Duration
    info += element(b"\x4d\x80", b"axis-relay test camera")  # MuxingApp
    header = element(b"\x1a\x45\xdf\xa3", element(b"\x42\x82", b"matroska"))
    yield header + b"\x18\x53\x80\x67" + b"\x01\xff\xff\xff\xff\xff\xff\xff" + element(b"\x15\x49\xa9\x66", info)
    for second in range(frames.start - frames.start % FPS, frames.stop, FPS):
        blocks = b""
        for index in range(max(second, frames.start), min(second + FPS, frames.stop)):
            relative_ms = (index - second) * 1000 // FPS
            flags = 0x80 if index % FPS == 0 else 0x00
            blocks += element(
                b"\xa3", b"\x81" + struct.pack(">hB", relative_ms, flags) + frame(camera, index, frame_bytes)
            )
        cluster_ms = (second - frames.start) * 1000 // FPS
        yield element(b"\x1f\x43\xb6\x75", element(b"\xe7", struct.pack(">q", max(0, cluster_ms))[-4:]) + blocks)


def clip_bytes(camera: str, starts: datetime, ends: datetime, **options: object) -> bytes:
    return b"".join(matroska(camera, frames_between(starts, ends, snap_to_key=False), **options))  # type: ignore[arg-type]


def frames_in(data: bytes, camera: str) -> set[int]:
    """The frame indexes of ``camera`` that ``data`` holds."""
    return {int(m.group(2)) for m in _FRAME.finditer(data) if m.group(1).decode() == camera}
