"""One piece of a camera's recording, exported from its SD card straight into the spool.

The piece becomes a clip of origin ``backfill`` through the same durable path as a
pushed clip (fsync, CRC32C, the ledger), streamed chunk by chunk and never held in
memory. Room is made sure of ahead of the bytes, and never by eviction: back-fill does
not push out what a device sent for footage that can wait on the card (``SpoolFull``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import structlog

from relay.backfill.gaps import Span
from relay.camera.answers import NOT_RECORDED, CameraError, Recording
from relay.camera.vapix import VapixClient
from relay.ops.stats import RelayStats
from relay.spool.clip import ClipMeta, Sender
from relay.spool.spool import Spool
from relay.spool.timing import ClipTimes, read_matroska_header

log = structlog.get_logger("relay.backfill")

# Room is checked this far ahead of an export's bytes (as ingest does for chunked bodies).
ROOM_AHEAD = 1024 * 1024
# An export's Matroska start further back than this from what was asked is not its own
# start (the recording's, say): the range asked for is used instead.
KEYFRAME_SNAP = timedelta(seconds=30)


class SpoolFull(Exception):
    """No room in the spool for back-fill (which never evicts what devices sent)."""


async def export_piece(
    spool: Spool, stats: RelayStats, client: VapixClient, recording: Recording, span: Span
) -> int | None:
    """One piece from the card into the spool; its byte count, or None when the card
    does not hold it after all (just deleted by its retention, say)."""
    name = client.name
    sender = Sender(camera=name, query={}, source=client.config.url)
    filename = f"backfill_{span.starts:%Y%m%dT%H%M%S}Z_{span.ends:%Y%m%dT%H%M%S}Z.mkv"
    # Asked before the card is: no export streamed only to be thrown away.
    if not await spool.has_room(ROOM_AHEAD):
        raise SpoolFull
    try:
        async with spool.receiving(
            sender,
            filename=filename,
            content_type="video/x-matroska",
            span_reader=export_span_reader(span),
            origin="backfill",
        ) as writer:
            checked = ROOM_AHEAD

            async def sink(chunk: bytes) -> None:
                nonlocal checked
                if writer.pending_size + len(chunk) > checked:
                    if not await spool.has_room(ROOM_AHEAD):
                        raise SpoolFull
                    checked = writer.pending_size + ROOM_AHEAD
                await writer.write(chunk)

            await client.export(recording, span.starts, span.ends, sink)
            if writer.pending_size == 0:
                raise CameraError(name, "exportrecording.cgi", "the export was empty", transient=True)
            meta = await writer.commit()
    except CameraError as exc:
        if exc.code in NOT_RECORDED:
            log.info("backfill_piece_not_on_card", camera=name, start=span.starts.isoformat(), reason=exc.reason)
            return None
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SpoolFull from None
        raise
    stats.backfill_clips += 1
    stats.backfill_bytes += meta.size
    log.info(
        "backfill_clip_stored",
        camera=name,
        clip_id=meta.clip_id,
        start=meta.starts_at,
        end=meta.ends_at,
        bytes=meta.size,
        recording=recording.recording_id,
    )
    return meta.size


def export_span_reader(asked: Span) -> Callable[[Path, ClipMeta], ClipTimes]:
    """An export's span: its Matroska header where it is plausibly the export's own
    (the device moves the start back to a key frame), else the range asked for."""

    def read_span(path: Path, meta: ClipMeta) -> ClipTimes:
        header = read_matroska_header(path)
        if (
            header
            and header.date_utc
            and asked.starts - KEYFRAME_SNAP <= header.date_utc <= asked.starts + KEYFRAME_SNAP
        ):
            if header.duration:
                return ClipTimes(header.date_utc, header.date_utc + header.duration, "matroska", "matroska")
            return ClipTimes(header.date_utc, asked.ends, "matroska", "export")
        return ClipTimes(asked.starts, asked.ends, "export", "export")

    return read_span
