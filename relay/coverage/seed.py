"""A gateway that can be replaced: a relay that starts with an empty ledger (a new box,
a wiped card) learns each camera's recent history from the bucket, for
``backfill.lookback_hours``. The time the site had no relay is then found as gaps and
back-filled from the cameras' cards within their retention, and nothing S3 already
holds is fetched or uploaded again."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from relay.backfill.gaps import Span
from relay.config import RelayConfig, S3Config
from relay.coverage.bucket import read_bucket
from relay.coverage.survey import layouts
from relay.ledger import InBucket, Ledger, LedgerWriter
from relay.upload.s3 import open_client

log = structlog.get_logger("relay.coverage")

# Seeding happens once, before back-fill's first round; a bucket that does not answer
# within this does not hold the relay up (it says so, with the fix).
SEED_TIMEOUT_S = 120.0


async def needs_seeding(config: RelayConfig, ledger: LedgerWriter) -> bool:
    """Asked at start-up, before the first clip is noted: is this ledger empty (no clip,
    no camera watched), with back-fill on and S3 to read?"""
    if not config.backfill.enabled or config.destination != "s3" or config.s3 is None or not _cameras(config):
        return False
    return bool(await ledger.run(lambda book: book.clips.count() == 0 and book.watch.count() == 0))


async def seed_history(config: RelayConfig, ledger: LedgerWriter) -> int:
    """Seed the ledger from S3 (``needs_seeding`` said so); the rows added."""
    s3 = config.s3
    assert s3 is not None
    now = datetime.now(UTC)
    window = Span(now - timedelta(hours=config.backfill.lookback_hours), now)
    added = 0
    try:
        async with asyncio.timeout(SEED_TIMEOUT_S), open_client(s3) as (client, _):
            for camera in _cameras(config):
                added += await _seed_camera(client, s3, ledger, camera, window)
    except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
        log.error(
            "ledger_seed_failed",
            error=str(exc) or type(exc).__name__,
            fix="the time before this relay started is not looked for; once S3 answers, fetch it by hand with "
            "'axis-relay backfill --camera NAME --from ... --to ...'",
        )
    return added


def _cameras(config: RelayConfig) -> list[str]:
    """The devices whose cards back-fill can reach: the time without a relay is theirs to fetch."""
    return [name for name, device in config.devices.items() if device.camera is not None]


async def _seed_camera(client: Any, s3: S3Config, ledger: LedgerWriter, camera: str, window: Span) -> int:
    reading = await read_bucket(client, s3.bucket, layouts(s3), camera, window)
    found = [InBucket(o.key, o.size, o.starts, o.ends, o.origin) for o in reading.objects if o.starts and o.ends]

    def write(book: Ledger) -> tuple[int, datetime | None]:
        added = book.clips.seed(camera, found)
        # Watched from the bucket's earliest footage the ledger did not have: what this
        # relay uploaded itself since it started is no history to look back over.
        since = max(window.starts, min(f.starts for f in added)) if added else None
        if since is not None:
            book.watch.start_at(camera, since)
        return len(added), since

    rows, since = await ledger.run(write) or (0, None)
    log.info(
        "ledger_seeded_from_s3",
        camera=camera,
        objects=rows,
        watched_since=since.isoformat() if since else None,
        requests=reading.list_requests + reading.head_requests,
    )
    return rows
