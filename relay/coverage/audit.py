"""The periodic audit: every ``audit.interval_s``, the last ``audit.window_hours`` of each
camera read from S3 and set against the ledger.

- Footage the ledger counts as delivered that S3 no longer holds (deleted, expired by a
  lifecycle rule) is reported: ``coverage_missing_in_s3`` in the log, the
  ``axis_relay_coverage_missing_in_s3_seconds`` metric, and health degraded. While the
  camera's card still has it, it is found as a gap and back-filled again.
- ``axis_relay_coverage_ratio{device}``: the share of the camera's time in S3 at the last
  audit (for a camera that records all the time; for others, the share not lost to a
  hole the ledger knows).

The last few minutes are left out: clips still on their way are not missing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from relay.backfill.gaps import FoundGap, Span, subtract
from relay.config import RelayConfig, S3Config
from relay.coverage.bucket import read_bucket
from relay.coverage.report import clip, judge, merge, seconds
from relay.coverage.survey import history, layouts
from relay.ledger import ClipRecord, GapRecord, LedgerError, LedgerWriter
from relay.ops.stats import RelayStats
from relay.upload.s3 import open_client

log = structlog.get_logger("relay.coverage")

# Clips younger than this may still be on their way to S3.
SETTLE = timedelta(minutes=5)
KEYS_LOGGED = 5
SLIVER_S = 0.25


class Audit:
    def __init__(self, config: RelayConfig, ledger: LedgerWriter, stats: RelayStats) -> None:
        assert config.s3 is not None
        self._config = config
        self._s3: S3Config = config.s3
        self._ledger = ledger
        self._stats = stats

    async def run(self) -> None:
        """Audit every interval, the first an interval after start (a relay just started
        has uploads of its own to make first), until cancelled; a round that fails is
        logged and the next one tries again."""
        async with open_client(self._s3) as (client, _):
            while True:
                await asyncio.sleep(self._config.audit.interval_s)
                try:
                    await self.round(client)
                except (ClientError, BotoCoreError, OSError, LedgerError) as exc:
                    log.warning("coverage_audit_failed", error=str(exc), retry_in_s=self._config.audit.interval_s)

    async def round(self, client: Any) -> None:
        now = datetime.now(UTC)
        window = Span(now - timedelta(hours=self._config.audit.window_hours), now - SETTLE)
        for camera in self._config.devices:
            await self._camera(client, camera, window, now)
        self._stats.coverage_audited_at = time.time()
        self._stats.coverage_audited_until = window.ends.timestamp()

    async def _camera(self, client: Any, camera: str, window: Span, now: datetime) -> None:
        device = self._config.devices[camera]
        reading = await read_bucket(client, self._s3.bucket, layouts(self._s3), camera, window)
        rows, gaps = await self._ledger.run(lambda book: history(book, camera, window)) or ([], [])
        # Time is owed only since the relay watches the camera (a new site, a camera added
        # yesterday), or its ratio would sit below 1 for a day and alert; footage it
        # delivered and lost counts whenever it was.
        since = await self._ledger.run(lambda book: book.watch.get(camera))
        owed = Span(max(window.starts, since), window.ends) if since is not None else window
        if owed.ends > owed.starts:
            report = judge(
                camera,
                owed,
                source="s3",
                continuous=device.camera is not None and device.camera.expect == "continuous",
                min_hole_s=device.camera.gap_threshold_s if device.camera else 2.0,
                objects=reading.objects,
                ledger_clips=rows,
                ledger_gaps=gaps,
            )
            self._stats.coverage_ratio[camera] = report.ratio
        in_s3 = merge(clip((o.span for o in reading.objects if o.span), window))
        held = {o.key for o in reading.objects}
        gone = [r for r in rows if r.state == "uploaded" and r.key and r.key not in held]
        # A sliver is a clip's edge meeting its neighbour's, not a loss.
        missing = [
            piece for r in gone if (span := r.span) for piece in subtract(span, in_s3) if piece.seconds >= SLIVER_S
        ]
        lost_s = seconds(merge(missing))
        self._stats.coverage_missing_s[camera] = lost_s
        gone_keys = [r.key for r in gone if r.key]
        back = [r.key for r in rows if r.key in held and r.missing_at]
        if gone_keys or back:
            await self._ledger.run(lambda book: book.clips.mark_missing(gone_keys, back, now))
        if missing:
            await self._found_missing(camera, missing, lost_s, gone, gaps, now)

    async def _found_missing(
        self,
        camera: str,
        missing: list[Span],
        lost_s: float,
        rows: list[ClipRecord],
        gaps: list[GapRecord],
        now: datetime,
    ) -> None:
        log.warning(
            "coverage_missing_in_s3",
            camera=camera,
            seconds=round(lost_s, 1),
            objects=len(rows),
            keys=[r.key for r in rows[:KEYS_LOGGED]],
            fix="check the bucket's lifecycle rules and who may delete objects; while the camera's card still "
            "holds the footage, back-fill fetches it again (axis-relay gaps)",
        )
        device = self._config.devices[camera]
        if not self._config.backfill.enabled or device.camera is None:
            return
        # Once per loss: a span already a gap still being worked on, or found unfillable,
        # is not asked for again every round. A filled one that is gone again is a new loss.
        known = [g.span for g in gaps if g.state != "filled"]
        fresh = [piece for span in missing for piece in subtract(span, known) if piece.seconds >= SLIVER_S]
        if fresh:
            found = [
                FoundGap(s.starts, s.ends, "coverage", "in the ledger as delivered, missing in S3 (audit)")
                for s in fresh
            ]
            await self._ledger.run(lambda book: book.gaps.record(camera, found, now))
