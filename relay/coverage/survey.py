"""Coverage for a site's cameras over a window: the bucket and the ledger read, each
camera judged (relay.coverage.report). Used by `axis-relay coverage`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from relay.backfill.gaps import Span
from relay.config import RelayConfig, S3Config
from relay.coverage.bucket import BucketReading, Layouts, present, read_bucket
from relay.coverage.keys import KeyLayout
from relay.coverage.report import CameraCoverage, Source, judge
from relay.ledger import ClipRecord, GapRecord, Ledger, LedgerError
from relay.upload.s3 import open_client


class CoverageUnavailable(Exception):
    """What coverage needs cannot be read (no ledger, no S3 access); the message says what."""


def layouts(s3: S3Config) -> Layouts:
    return Layouts(KeyLayout(s3.key_template), KeyLayout(s3.backfill_key_template))


def history(book: Ledger, camera: str, window: Span) -> tuple[list[ClipRecord], list[GapRecord]]:
    """What the ledger knows of ``camera`` over ``window``: its clips, and its gaps."""
    gaps = [g for g in book.gaps.find(camera=camera, since=window.starts) if g.span.starts < window.ends]
    return book.clips.overlapping(camera, window), gaps


def _ledger_rows(path: Path, camera: str, window: Span) -> tuple[list[ClipRecord], list[GapRecord]]:
    ledger = Ledger.open_readonly(path)
    try:
        return history(ledger, camera, window)
    finally:
        ledger.close()


async def survey(config: RelayConfig, cameras: Sequence[str], window: Span, source: Source) -> list[CameraCoverage]:
    ledger: dict[str, tuple[list[ClipRecord], list[GapRecord]] | None] = {}
    for camera in cameras:
        try:
            ledger[camera] = await asyncio.to_thread(_ledger_rows, config.ledger_path, camera, window)
        except (FileNotFoundError, LedgerError) as exc:
            if source != "s3":
                raise CoverageUnavailable(f"cannot read the ledger {config.ledger_path}: {exc}") from None
            ledger[camera] = None  # S3 alone still answers; holes come without reasons
    readings: dict[str, BucketReading] = {}
    outside: dict[str, dict[str, bool]] = {}
    if source != "ledger":
        if config.s3 is None or config.destination != "s3":
            raise CoverageUnavailable(
                "coverage from S3 reads the bucket with the relay's [s3] credentials (ListBucket and GetObject); "
                "this relay sends through API Gateway: use --source ledger, or run it where [s3] is set"
            )
        async with open_client(config.s3) as (client, _):
            for camera in cameras:
                listing = await read_bucket(client, config.s3.bucket, layouts(config.s3), camera, window)
                readings[camera] = listing
                rows = ledger[camera]
                unlisted = [
                    r.key
                    for r in (rows[0] if rows else [])
                    if r.key and r.state == "uploaded" and not any(r.key.startswith(p) for p in listing.prefixes)
                ]
                outside[camera] = await present(client, config.s3.bucket, unlisted, listing)
    reports = []
    for camera in cameras:
        device = config.devices[camera].camera
        rows = ledger[camera]
        reading = readings.get(camera)
        reports.append(
            judge(
                camera,
                window,
                source=source,
                continuous=device is not None and device.expect == "continuous",
                min_hole_s=device.gap_threshold_s if device is not None else 2.0,
                objects=reading.objects if reading else None,
                ledger_clips=rows[0] if rows else None,
                ledger_gaps=rows[1] if rows else (),
                keys_outside_listing=outside.get(camera),
                requests={"list": reading.list_requests, "head": reading.head_requests} if reading else {},
            )
        )
    return reports
