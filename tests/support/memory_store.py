"""An object store in memory, for the upload rules' unit layer (tests/test_delivery_rules.py).

It keeps S3's documented semantics that ``relay.upload.delivery`` relies on, and nothing
else: a conditional PUT and CompleteMultipartUpload (``If-None-Match: *``: False /
"taken" when the key exists), checksums checked (the whole object's CRC32C, each
part's), ListMultipartUploads with Initiated times, ListParts ("gone" once completed or
aborted), HeadObject with the clip id the relay writes into the metadata.

Faults are queued per operation: ``before`` (the request never took effect) or
``after`` (it took effect and the answer was lost), or a 409 on the next completion.
The real stores (S3Store against the test S3, the hand-off against the gateway
stand-in) are driven by the acceptance tests; this one lets each rule run in
milliseconds.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import crc32c

from relay.spool.clip import ClipMeta
from relay.spool.progress import Part
from relay.upload.body import FileRange
from relay.upload.delivery import Completion, OpenUpload, StoredObject

When = Literal["before", "after"]


class LostAnswer(ConnectionResetError):
    """The connection dropped: the request may or may not have taken effect."""


def crc_of(data: bytes) -> str:
    return base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()


@dataclass
class Upload:
    key: str
    clip_id: str
    initiated: datetime
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # number -> (ETag, bytes)


@dataclass
class StoredBytes:
    data: bytes
    clip_id: str | None


class MemoryStore:
    name: Literal["s3"] = "s3"

    def __init__(self) -> None:
        self.objects: dict[str, StoredBytes] = {}
        self.uploads: dict[str, Upload] = {}
        self.calls: Counter[str] = Counter()
        self.completed: list[str] = []  # upload ids, in the order they were completed
        self._faults: dict[str, list[list[Any]]] = {}  # operation -> [[when, calls to let through]]
        self._ids = itertools.count(1)

    # ----- faults -----------------------------------------------------------

    def fail_next(self, operation: str, when: When | Literal["conflict"] = "before", *, after_calls: int = 0) -> None:
        """Make a coming call of ``operation`` fail: the next, or the one after
        ``after_calls`` more calls go through."""
        self._faults.setdefault(operation, []).append([when, after_calls])

    def _fault(self, operation: str, now: When) -> None:
        queued = self._faults.get(operation)
        if not queued:
            return
        when, skip = queued[0]
        if skip:
            if now == "after":  # one more call went through
                queued[0][1] = skip - 1
            return
        if when == now:
            queued.pop(0)
            raise LostAnswer(f"{operation}: connection reset ({now} the store acted)")

    # ----- the ObjectStore protocol -------------------------------------------

    async def put(self, meta: ClipMeta, key: str, body: FileRange) -> bool:
        self.calls["put"] += 1
        self._fault("put", "before")
        data = _read(body)
        if crc_of(data) != meta.crc32c:
            raise ValueError("BadDigest: the body does not match ChecksumCRC32C")
        if key in self.objects:
            return False
        self.objects[key] = StoredBytes(data, meta.clip_id)
        self._fault("put", "after")
        return True

    async def create_multipart(self, meta: ClipMeta, key: str) -> str:
        self.calls["create_multipart"] += 1
        self._fault("create_multipart", "before")
        upload_id = f"upload-{next(self._ids)}"
        self.uploads[upload_id] = Upload(key, meta.clip_id, datetime.now(UTC))
        self._fault("create_multipart", "after")
        return upload_id

    async def open_uploads(self, key: str) -> list[OpenUpload]:
        self.calls["open_uploads"] += 1
        return [OpenUpload(i, u.initiated) for i, u in self.uploads.items() if u.key == key]

    async def upload_part(self, key: str, upload_id: str, number: int, body: FileRange, checksum: str) -> str:
        self.calls["upload_part"] += 1
        self._fault("upload_part", "before")
        upload = self.uploads.get(upload_id)
        if upload is None or upload.key != key:
            raise KeyError(f"NoSuchUpload: {upload_id}")
        data = _read(body)
        if crc_of(data) != checksum:
            raise ValueError(f"BadDigest: part {number} does not match its ChecksumCRC32C")
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        upload.parts[number] = (etag, data)
        self._fault("upload_part", "after")
        return etag

    async def list_parts(self, key: str, upload_id: str) -> dict[int, str] | None:
        self.calls["list_parts"] += 1
        upload = self.uploads.get(upload_id)
        return None if upload is None else {n: etag for n, (etag, _) in upload.parts.items()}

    async def complete(self, meta: ClipMeta, key: str, upload_id: str, parts: list[Part]) -> Completion:
        self.calls["complete"] += 1
        queued = self._faults.get("complete")
        if queued and queued[0] == ["conflict", 0]:
            queued.pop(0)
            return "conflict"
        self._fault("complete", "before")
        upload = self.uploads.get(upload_id)
        if upload is None:
            return "gone"
        if key in self.objects:
            return "taken"
        if [(p.number, p.etag) for p in parts] != [(n, upload.parts[n][0]) for n in sorted(upload.parts)]:
            raise ValueError("InvalidPart: the list does not match the parts uploaded")
        data = b"".join(upload.parts[p.number][1] for p in parts)
        if crc_of(data) != meta.crc32c:
            raise ValueError("BadDigest: the object does not match its full-object ChecksumCRC32C")
        self.objects[key] = StoredBytes(data, meta.clip_id)
        del self.uploads[upload_id]
        self.completed.append(upload_id)
        self._fault("complete", "after")
        return "done"

    async def abort(self, key: str, upload_id: str) -> None:
        self.calls["abort"] += 1
        self.uploads.pop(upload_id, None)

    async def head(self, key: str) -> StoredObject | None:
        self.calls["head"] += 1
        found = self.objects.get(key)
        return None if found is None else StoredObject(found.clip_id, len(found.data), crc_of(found.data))


def _read(body: FileRange) -> bytes:
    with body.open() as stream:
        return stream.read()
