"""A clip as the relay knows it: metadata kept beside the bytes, and safe names."""

from __future__ import annotations

import base64
import json
import os
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal, get_args

MAX_FILENAME_BYTES = 200  # leaves room in a 255-byte name for a disambiguating suffix

# Letters and digits of any script stay (after NFKC): "видео.mkv" is kept readable, not
# collapsed to "mkv". S3 keys and file systems take UTF-8; separators and controls never.
_UNSAFE = re.compile(r"[^\w.+=@,-]+")


CLIP_ID_TIME = "%Y%m%dT%H%M%S.%fZ"
# How the ledger and its readers write a moment: UTC, fixed width, so text order is time order.
LEDGER_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"

# How a clip reached the relay: pushed by the device, or fetched back from its SD card.
ClipOrigin = Literal["device", "backfill"]
CLIP_ORIGINS: tuple[str, ...] = get_args(ClipOrigin)

# The device's "#s" file-name modifier: a 5-digit sequence number, the last group of
# digits in the name (``video23-04-13_21-50-27-63_00001.mkv``). A stem that ends in a
# longer run of digits (a timestamp) has none.
_SEQUENCE = re.compile(r"(?:^|[^0-9])([0-9]{5})$")


def new_clip_id(now: datetime) -> str:
    """Sortable by arrival, unique without coordination: 20261126T225200.123456Z-3f9a1c2b."""
    return now.strftime(CLIP_ID_TIME) + "-" + os.urandom(4).hex()


def clip_id_time(clip_id: str) -> datetime:
    """When the clip with this id arrived (the inverse of ``new_clip_id``)."""
    return datetime.strptime(clip_id.split("-")[0], CLIP_ID_TIME).replace(tzinfo=UTC)


def ledger_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(LEDGER_TIME)


def footage_time(moment: datetime) -> str:
    """A footage time as objects carry it (metadata, keys): UTC to the millisecond,
    '2026-12-02T10:30:15.120Z'."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sequence_number(filename: str) -> int | None:
    """The device's sequence number in a clip's file name, if the name carries one."""
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    found = _SEQUENCE.search(stem)
    return int(found.group(1)) if found else None


def safe_filename(name: str | None, fallback_stem: str, default_ext: str = ".mkv") -> str:
    """A name that is safe as one path component and one S3 key segment.

    Devices build names from templates (``video%y-%m-%d_..._#s.mkv``), so real names are
    already tame; this guards against a hostile or broken sender: no separators, no
    ``..``, no control characters or NUL, bounded length.
    """
    if name:
        name = unicodedata.normalize("NFKC", name)
        # Keep only the last path component, whichever separator the sender used.
        name = re.split(r"[/\\]", name)[-1]
        name = _UNSAFE.sub("_", name).strip("._")
        name = re.sub(r"\.{2,}", ".", name)
    if not name:
        return fallback_stem + default_ext
    if len(name.encode()) > MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and len(ext) <= 10 else ""
        # Cut in bytes, not characters (a Cyrillic letter is two), never mid-character.
        room = MAX_FILENAME_BYTES - len(ext.encode())
        name = (stem if ext else name).encode()[:room].decode(errors="ignore") + ext
    return name


def crc32c_b64(value: int) -> str:
    """The form S3 expects in ``x-amz-checksum-crc32c``."""
    return base64.b64encode(value.to_bytes(4, "big")).decode()


@dataclass(frozen=True)
class Sender:
    """Where a clip came from: the device's name, its query parameters, its address."""

    camera: str
    query: dict[str, str]
    source: str


@dataclass(frozen=True)
class ClipMeta:
    clip_id: str
    camera: str
    filename: str
    content_type: str
    size: int
    crc32c: str  # base64, big-endian, as S3 reports it
    received_at: str  # ISO 8601 UTC
    query: dict[str, str] = field(default_factory=dict)
    source: str = ""
    origin: ClipOrigin = "device"
    # The footage's span (relay.spool.timing), ISO 8601 UTC, and where each came from.
    starts_at: str | None = None
    ends_at: str | None = None
    starts_source: str | None = None
    ends_source: str | None = None

    @property
    def received(self) -> datetime:
        return datetime.fromisoformat(self.received_at).astimezone(UTC)

    @property
    def starts(self) -> datetime | None:
        return datetime.fromisoformat(self.starts_at).astimezone(UTC) if self.starts_at else None

    @property
    def ends(self) -> datetime | None:
        return datetime.fromisoformat(self.ends_at).astimezone(UTC) if self.ends_at else None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ClipMeta:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("metadata is not a JSON object")
        meta = cls(**raw)
        if not isinstance(meta.size, int) or meta.size < 0:
            raise ValueError(f"bad size {meta.size!r}")
        if meta.origin not in CLIP_ORIGINS:
            raise ValueError(f"bad origin {meta.origin!r}")
        return meta
