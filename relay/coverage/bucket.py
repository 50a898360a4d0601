"""The footage a bucket holds for one camera over a window, read from S3 itself.

One ListObjectsV2 page per 1000 objects of each day the window touches, for the device's
key prefix and back-fill's (and, from the day before, only the tail: a clip that began
before midnight); with the default templates a camera-day of 15 s clips is 2 + 6 + 1
requests; where the key does not tell the
footage (relay.coverage.keys), one HeadObject per object for its metadata
(relay.upload.metadata). Requests are counted: the README's cost table comes from them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from relay.backfill.gaps import Span
from relay.coverage.keys import KeyLayout
from relay.upload.failures import no_such_key

# A clip is never longer than this: how far before the window a clip in it can begin.
REACH = timedelta(hours=1)
HEADS_AT_ONCE = 16


@dataclass(frozen=True)
class ObjectFootage:
    key: str
    size: int
    starts: datetime | None  # None: neither its key nor its metadata says
    ends: datetime | None
    origin: str  # "device", "backfill", or "" when unknown

    @property
    def span(self) -> Span | None:
        return Span(self.starts, self.ends) if self.starts and self.ends else None


@dataclass
class BucketReading:
    objects: list[ObjectFootage] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)  # what was listed
    list_requests: int = 0
    head_requests: int = 0


@dataclass(frozen=True)
class Layouts:
    """The key templates objects of this site were written with: device clips' and
    back-fill's."""

    device: KeyLayout
    backfill: KeyLayout

    def read(self, key: str) -> tuple[Span, str] | None:
        for layout, origin in ((self.device, "device"), (self.backfill, "backfill")):
            if (found := layout.span(key)) is not None:
                return Span(found.starts, found.ends), origin
        return None


def _days(window: Span) -> list[datetime]:
    first = (window.starts - REACH).replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while first < window.ends:
        days.append(first)
        first += timedelta(days=1)
    return days


async def read_bucket(
    client: Any, bucket: str, layouts: Layouts, camera: str, window: Span, *, page_size: int = 1000
) -> BucketReading:
    reading = BucketReading()
    listed: dict[str, int] = {}
    for n, day in enumerate(_days(window)):
        prefixes = {layout.day_prefix(camera, day): layout for layout in (layouts.device, layouts.backfill)}
        for prefix, layout in prefixes.items():
            if any(other != prefix and prefix.startswith(other) for other in prefixes):
                continue  # listed with the shorter prefix
            if any(prefix.startswith(done) for done in reading.prefixes):
                continue  # a template without the day in its prefix: listed once for every day
            after = layout.start_after(camera, window.starts - REACH) if n == 0 else None
            reading.prefixes.append(prefix)
            listed |= await _list(client, bucket, prefix, after, reading, page_size)
    unread: list[tuple[str, int]] = []
    for key, size in listed.items():
        found = layouts.read(key)
        if found is None:
            unread.append((key, size))
        else:
            span, origin = found
            reading.objects.append(ObjectFootage(key, size, span.starts, span.ends, origin))
    reading.objects += await _heads(client, bucket, unread, reading)
    reading.objects = sorted(
        (o for o in reading.objects if o.span is None or (o.span.ends > window.starts and o.span.starts < window.ends)),
        key=lambda o: (o.starts or window.starts, o.key),
    )
    return reading


async def _list(
    client: Any, bucket: str, prefix: str, after: str | None, reading: BucketReading, page_size: int
) -> dict[str, int]:
    found: dict[str, int] = {}
    args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
    if after is not None:
        args["StartAfter"] = after
    while True:
        page = await client.list_objects_v2(**args)
        reading.list_requests += 1
        found |= {o["Key"]: int(o.get("Size", 0)) for o in page.get("Contents", [])}
        if not page.get("IsTruncated"):
            return found
        args = {**args, "ContinuationToken": page["NextContinuationToken"]}
        args.pop("StartAfter", None)


async def present(client: Any, bucket: str, keys: Sequence[str], reading: BucketReading) -> dict[str, bool]:
    """Whether each key exists (HEAD), for keys no listing covered."""

    async def exists(key: str) -> bool:
        try:
            await client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if no_such_key(exc):
                return False
            raise
        finally:
            reading.head_requests += 1
        return True

    return {key: await exists(key) for key in keys}


async def _heads(
    client: Any, bucket: str, keys: Sequence[tuple[str, int]], reading: BucketReading
) -> list[ObjectFootage]:
    limit = asyncio.Semaphore(HEADS_AT_ONCE)

    async def head(key: str, size: int) -> ObjectFootage | None:
        async with limit:
            try:
                answer = await client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if no_such_key(exc):
                    return None  # deleted between the listing and now
                raise
            finally:
                reading.head_requests += 1
        meta = answer.get("Metadata", {})
        starts, ends = _time(meta.get("footage-start")), _time(meta.get("footage-end"))
        return ObjectFootage(key, size, starts, ends, meta.get("origin", ""))

    return [o for o in await asyncio.gather(*(head(k, s) for k, s in keys)) if o is not None]


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
