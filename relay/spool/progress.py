"""A clip's multipart upload in progress, as its spool directory keeps it (upload.json).

Saved before the upload is created (the intent: ``intent_at``, no ``upload_id``), again
once the store answered (``upload_id``), and after every part (``parts``): what a
restart needs to resume, to recognise the upload a crash left unrecorded, and never to
take another clip's upload for an orphan. ``superseded``: uploads set aside after a 409
on their completion, aborted once the clip is committed.

The JSON is what relays have written all along (tests/test_progress.py reads such a
file): ``via``, ``key``, ``part_size``, ``upload_id``, ``intent_at`` (ISO 8601),
``parts`` ({"1": {"etag", "crc32c"}}), ``superseded``. A file without ``via`` came from
the S3 store, before stores were named.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    crc32c: str


@dataclass(frozen=True)
class UploadProgress:
    key: str
    via: str = "s3"
    part_size: int | None = None
    upload_id: str | None = None
    intent_at: datetime | None = None
    parts: tuple[Part, ...] = ()
    superseded: tuple[str, ...] = ()

    def started(self) -> tuple[str, int]:
        """The upload id and part size of an upload the store created (ValueError for an intent)."""
        if self.upload_id is None or self.part_size is None:
            raise ValueError(f"no multipart upload was started for {self.key}")
        return self.upload_id, self.part_size

    def with_parts(self, parts: dict[int, Part]) -> UploadProgress:
        return dataclasses.replace(self, parts=tuple(parts[n] for n in sorted(parts)))

    def parts_by_number(self) -> dict[int, Part]:
        return {p.number: p for p in self.parts}

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"via": self.via, "key": self.key}
        if self.part_size is not None:
            data["part_size"] = self.part_size
            data["parts"] = {str(p.number): {"etag": p.etag, "crc32c": p.crc32c} for p in self.parts}
        if self.upload_id is not None:
            data["upload_id"] = self.upload_id
        if self.intent_at is not None:
            data["intent_at"] = self.intent_at.isoformat()
        if self.superseded:
            data["superseded"] = list(self.superseded)
        return data

    @classmethod
    def from_json(cls, data: object) -> UploadProgress | None:
        """None for anything that is not progress the relay wrote (a torn or foreign
        file costs a restart of the upload, never the clip)."""
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            return None
        try:
            parts = tuple(
                sorted(
                    (Part(int(n), str(p["etag"]), str(p["crc32c"])) for n, p in (data.get("parts") or {}).items()),
                    key=lambda p: p.number,
                )
            )
            intent_at = data.get("intent_at")
            return cls(
                key=data["key"],
                via=str(data.get("via", "s3")),
                part_size=int(data["part_size"]) if data.get("part_size") is not None else None,
                upload_id=data["upload_id"] if isinstance(data.get("upload_id"), str) else None,
                intent_at=datetime.fromisoformat(intent_at).astimezone(UTC) if isinstance(intent_at, str) else None,
                parts=parts,
                superseded=tuple(str(u) for u in data.get("superseded") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
