"""Back-fill: find each camera's gaps and fetch the missing footage from its SD card.

One task per device, for the relay's whole life. Each round it looks over the
device's clips in the ledger for new gaps (``relay.backfill.gaps``), then works
through the gaps that are due, oldest first:

- no ``[devices.<name>.camera]`` section: the gap is ``unfillable``, and says so;
- list the recordings on the card that overlap the gap (plus ``backfill.margin_s``),
  export what they hold of it in pieces of at most ``backfill.piece_s``, each straight
  into the spool as a clip of origin ``backfill`` (the same durable path as a pushed
  clip: fsync, CRC32C, the ledger; then uploaded with every guarantee);
- after each piece the gap's ``fetched_until`` moves on, and footage a back-fill clip
  already holds is never asked for again, so a relay killed mid-gap goes on where it
  was, and an export cut off half-way is asked for again whole, never stored twice;
- a camera that cannot be asked (unreachable, a timeout, nonsense) puts the gap in
  ``retrying`` with capped exponential backoff; it never stops the relay or the uploads.

On a site with two gateways (relay.pair), a gap in this relay's ledger is first judged
against the bucket: what the peer stored is no gap, and what S3 lacks is fetched only
by the relay that holds the camera's lease, which it checks again before each piece.

At most one export per camera at a time (its task does one thing at a time), at most
``backfill.max_concurrent`` over all cameras, and none while more than
``backfill.max_queued_bytes`` waits for upload: the uplink carries what the devices
sent first, and the footage waits safely on the card.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from relay.backfill.camera_state import CameraState
from relay.backfill.export import SpoolFull, export_piece
from relay.backfill.gaps import Expectation, Span, covered_seconds, find_gaps, subtract
from relay.backoff import Backoff
from relay.camera.answers import CameraError, retention_start
from relay.camera.vapix import VapixClient
from relay.config import BackfillConfig, DeviceConfig
from relay.ledger import GapRecord, GapState, Ledger, LedgerError, LedgerWriter
from relay.ops.stats import CameraStatus, RelayStats
from relay.pair import Pair
from relay.spool.spool import Spool

log = structlog.get_logger("relay.backfill")

# After the first round, each reads again at least this far back: a long clip that
# arrives late, or one put back with 'spool retry', still counts.
RESCAN_S = 600.0


def now_utc() -> datetime:
    return datetime.now(UTC)


class Backfill:
    def __init__(
        self,
        config: BackfillConfig,
        devices: dict[str, DeviceConfig],
        spool: Spool,
        ledger: LedgerWriter,
        stats: RelayStats,
        pair: Pair | None = None,
    ) -> None:
        self._pair = pair
        self._config = config
        self._devices = devices
        self._spool = spool
        self._ledger = ledger
        self._stats = stats
        self._exports = asyncio.Semaphore(config.max_concurrent)
        self._clients: dict[str, VapixClient] = {}
        # Camera time of each camera's last detection round.
        self._scanned_until: dict[str, datetime] = {}
        self._cameras = {
            name: CameraState(name, stats.cameras.setdefault(name, _status(d))) for name, d in devices.items()
        }
        self._paused = False

    async def run(self, history: Coroutine[Any, Any, object] | None = None) -> None:
        """Watch every device until cancelled; returns only when the ledger cannot be
        read (back-fill gives up, the relay goes on relaying). ``history``, awaited
        before the first round: a new gateway's ledger seeded from S3."""
        try:
            interrupted = await self._ledger.run(lambda ledger: ledger.gaps.interrupted(now_utc()))
        except LedgerError as exc:
            # A full or failing disk: the gaps left "fetching" wait for the next start;
            # back-fill itself goes on (every later write is retried round by round).
            log.error("backfill_resume_failed", error=str(exc))
            interrupted = 0
        if interrupted is None:
            log.error("backfill_unavailable", reason="the ledger could not be opened; gaps cannot be found")
            if history is not None:
                history.close()  # nothing to seed into
            return
        if interrupted:
            log.info("backfill_resumed", gaps=interrupted)
        if history is not None:
            await history
        async with contextlib.AsyncExitStack() as stack:
            for name, device in self._devices.items():
                if device.camera is not None:
                    self._clients[name] = await stack.enter_async_context(VapixClient.open(name, device.camera))
            async with asyncio.TaskGroup() as group:
                for name in self._devices:
                    group.create_task(self._watch(name), name=f"backfill-{name}")

    async def _watch(self, name: str) -> None:
        while True:
            try:
                await self._round(name)
            except Exception:
                # A bug, or the ledger's disk failing: logged and counted, never the end
                # of back-fill for this camera (or of the relay).
                log.exception("backfill_error", camera=name)
                self._stats.backfill_errors += 1
            await asyncio.sleep(self._config.scan_interval_s)

    async def _round(self, name: str) -> None:
        if (client := self._clients.get(name)) is not None:
            await self._cameras[name].check_clock(client)
        await self._detect(name)
        while not self._backlogged():
            gap = await self._ledger.run(lambda ledger: ledger.gaps.due(name, now_utc()))
            if gap is None:
                break
            await self._fill(name, gap)
        await self._refresh_totals()

    # ----- detection ------------------------------------------------------

    async def _detect(self, name: str) -> None:
        device = self._devices[name]
        camera = device.camera
        expect = Expectation(
            continuous=camera is not None and camera.expect == "continuous",
            cadence_s=camera.cadence_s if camera else 0.0,
            grace_s=camera.grace_s if camera else 0.0,
            threshold_s=camera.gap_threshold_s if camera else 2.0,
        )
        moment = self._cameras[name].now()
        lookback = moment - timedelta(hours=self._config.lookback_hours)
        # The first round reads the whole lookback (the time the relay was down, too);
        # later ones only what can still change: the recent clips, and evictions.
        scanned = self._scanned_until.get(name)
        recent = max(RESCAN_S, 2 * (expect.cadence_s + expect.grace_s))
        since = lookback if scanned is None else max(lookback, scanned - timedelta(seconds=recent))

        def detect(ledger: Ledger) -> list[GapRecord]:
            watched = ledger.watch.since(name, moment)
            clips = ledger.clips.spans(name, since) + ledger.clips.evicted_spans(name, lookback)
            known = ledger.gaps.known(name, since)
            found = find_gaps(clips, known, expect, moment, since=since, watched_since=watched)
            return ledger.gaps.record(name, found, now_utc()) if found else []

        recorded = await self._ledger.run(detect)
        if recorded is not None:
            self._scanned_until[name] = moment
        for gap in recorded or []:
            self._stats.gaps_detected += 1
            log.warning(
                "gap_detected",
                **_about(gap),
                seconds=round(gap.seconds, 2),
                cause=gap.cause,
                reason=gap.reason,
            )

    # ----- filling --------------------------------------------------------

    def _backlogged(self) -> bool:
        over = self._spool.queued_bytes > self._config.max_queued_bytes
        if over != self._paused:
            self._paused = over
            if over:
                log.info("backfill_paused", queued_bytes=self._spool.queued_bytes, limit=self._config.max_queued_bytes)
            else:
                log.info("backfill_resumed_after_backlog", queued_bytes=self._spool.queued_bytes)
        return over

    async def _fill(self, name: str, gap: GapRecord) -> None:
        client = self._clients.get(name)
        in_s3: list[Span] = []
        if self._pair is not None:
            try:
                verdict = await self._pair.judge(name, gap.span, fillable=client is not None)
            except (ClientError, BotoCoreError, OSError) as exc:
                await self._retry(gap, f"cannot read the bucket to judge the gap: {exc}", self._config.retry_max_s)
                return
            if verdict.in_s3_already:
                await self._settle(gap, "filled", "S3 holds it: the peer stored it", missing_s=0.0)
                return
            if verdict.wait_s is not None:
                await self._retry(gap, verdict.reason, verdict.wait_s)
                return
            in_s3 = verdict.in_s3
        if client is None:
            await self._settle(
                gap,
                "unfillable",
                f"no camera access configured: add [devices.{name}.camera] with url, username and password",
            )
            return
        async with self._exports:
            await self._update(gap, "fetching", attempts=gap.attempts + 1)
            try:
                state, reason, missing = await self._fetch(name, client, gap, in_s3)
            except LeaseLost as exc:
                await self._retry(gap, str(exc), self._pair.leases.next_slot_in() if self._pair else 60.0)
                return
            except CameraError as exc:
                await self._camera_failed(name, gap, exc)
                return
            except SpoolFull:
                await self._retry(gap, "no room in the spool for back-fill (it never evicts device clips)", 60.0)
                return
            except Exception as exc:
                # Not left "fetching" until the next start: waits the longest backoff,
                # and the round's error is logged by the caller.
                await self._retry(gap, f"unexpected error: {exc!r}", self._config.retry_max_s)
                raise
        self._cameras[name].answered()
        await self._settle(gap, state, reason, missing_s=missing)

    async def _fetch(
        self, name: str, client: VapixClient, gap: GapRecord, in_s3: list[Span]
    ) -> tuple[GapState, str, float]:
        camera = client.config
        disks = await client.disks()
        disk = next((d for d in disks if d.disk_id == camera.disk), None)
        if disk is None:
            present = ", ".join(d.disk_id for d in disks) or "none"
            return "unfillable", f"no SD card: the camera has no disk {camera.disk} (it has: {present})", gap.seconds
        if not disk.usable:
            return "unfillable", f"no SD card: {disk.disk_id} is {disk.status}", gap.seconds
        span = gap.span
        oldest = retention_start(disk, self._cameras[name].now())
        if oldest is not None and span.ends < oldest:
            return (
                "unfillable",
                f"retention passed: {disk.disk_id} keeps {disk.cleanup_max_age_days} day(s) of footage "
                "(cleanupmaxage) and this is older; raise the card's retention",
                gap.seconds,
            )
        margin = timedelta(seconds=self._config.margin_s)
        wanted = Span(span.starts - margin, span.ends + margin)
        recordings = await client.recordings(disk.disk_id, wanted.starts, wanted.ends)
        on_card = [Span(max(r.starts, wanted.starts), min(r.stops, wanted.ends)) for r in recordings]
        recorded = covered_seconds(span, on_card)
        if recorded <= 0:
            why = "no recording on the card covers it"
            if oldest is not None and span.starts < oldest:
                why += f" (it is older than the card's retention, {disk.cleanup_max_age_days} day(s))"
            elif not recordings:
                why += "; is continuous recording to the SD card on?"
            return "unfillable", why, gap.seconds
        resume = gap.resume_from if gap.fetched_until else None
        fetched_bytes = gap.fetched_bytes
        not_on_card: list[Span] = []
        for recording, piece in zip(recordings, on_card, strict=True):
            start = max(piece.starts, resume) if resume else piece.starts
            if start >= piece.ends:
                continue
            wanted_here = Span(start, piece.ends)
            have = await self._backfilled(name, wanted_here) + in_s3
            for todo in subtract(wanted_here, have):
                for part in _pieces(todo, self._config.piece_s):
                    if self._pair is not None and not self._pair.leases.held(name):
                        raise LeaseLost(f"the lease on {name}'s back-fill moved to the peer mid-gap")
                    stored = await export_piece(self._spool, self._stats, client, recording, part)
                    if stored is None:
                        not_on_card.append(part)
                    else:
                        fetched_bytes += stored
                    await self._progress(gap, part.ends, fetched_bytes)
        # Listed but refused at export (deleted meanwhile, say): missing too.
        recorded -= covered_seconds(span, not_on_card)
        if not_on_card and recorded < 0.5:
            return "unfillable", "the card lists recordings of it but refused to export them", gap.seconds
        missing = max(0.0, gap.seconds - recorded)
        if missing >= 0.5:
            return "filled", f"{missing:.1f} s of it was never recorded on the card (the camera restarted?)", missing
        return "filled", "", 0.0

    # ----- outcomes -------------------------------------------------------

    async def _progress(self, gap: GapRecord, fetched_until: datetime, fetched_bytes: int) -> None:
        """The gap's footage up to ``fetched_until`` is durable in the spool."""

        await self._update(gap, "fetching", fetched_until=fetched_until, fetched_bytes=fetched_bytes)

    async def _settle(self, gap: GapRecord, state: GapState, reason: str, missing_s: float | None = None) -> None:
        reason = reason or f"fetched from the SD card ({gap.found})"
        fields: dict[str, object] = {"reason": reason, "next_try_at": None}
        if missing_s is not None:
            fields["missing_s"] = missing_s
        await self._update(gap, state, **fields)
        event = "gap_filled" if state == "filled" else "gap_unfillable"
        self._stats.gaps_settled[state] += 1
        (log.info if state == "filled" else log.warning)(
            event,
            **_about(gap),
            seconds=round(gap.seconds, 2),
            cause=gap.cause,
            reason=reason,
        )

    async def _retry(self, gap: GapRecord, reason: str, after_s: float) -> None:
        when = now_utc() + timedelta(seconds=after_s)
        await self._update(gap, "retrying", reason=reason, next_try_at=when)
        log.warning(
            "gap_retrying",
            **_about(gap),
            attempts=gap.attempts + 1,
            reason=reason,
            retry_in_s=round(after_s, 1),
        )

    async def _camera_failed(self, name: str, gap: GapRecord, exc: CameraError) -> None:
        self._cameras[name].failed(exc)
        # A wrong password or a missing API waits as long as backoff allows: it needs
        # an operator, and the footage waits on the card meanwhile.
        attempts = gap.attempts + 1 if exc.transient else 99
        wait = Backoff(self._config.retry_initial_s, self._config.retry_max_s).delay(attempts)
        await self._retry(gap, str(exc), wait)

    async def _refresh_totals(self) -> None:
        since = now_utc() - timedelta(hours=self._config.lookback_hours)
        totals = await self._ledger.run(lambda ledger: ledger.gaps.totals(since))
        if totals is not None:
            self._stats.gap_totals = totals
        now = now_utc()
        overdue, lost = now - timedelta(seconds=self._config.retry_max_s), now - timedelta(hours=24)
        attention = await self._ledger.run(lambda ledger: ledger.gaps.attention(overdue, lost))
        if attention is not None:
            self._stats.gap_attention = attention

    async def _backfilled(self, name: str, span: Span) -> list[Span]:
        return await self._ledger.run(lambda ledger: ledger.clips.backfilled(name, span)) or []

    async def _update(self, gap: GapRecord, state: GapState, **fields: object) -> None:
        await self._ledger.run(lambda ledger: ledger.gaps.update(gap.gap_id, state, now_utc(), **fields))


class LeaseLost(Exception):
    """The pair's other relay took the camera's back-fill over (this relay's slot ended)."""


def _about(gap: GapRecord) -> dict[str, object]:
    """The fields every gap_* log event names its gap by."""
    return {"camera": gap.camera, "gap_id": gap.gap_id, "start": gap.starts_at, "end": gap.ends_at}


def _status(device: DeviceConfig) -> CameraStatus:
    camera = device.camera
    continuous = camera is not None and camera.expect == "continuous"
    return CameraStatus(access=camera is not None, cadence_s=camera.cadence_s if camera and continuous else None)


def _pieces(span: Span, piece_s: float) -> list[Span]:
    """The span in pieces on a grid of whole seconds, as the camera takes them: cut at
    fractions, each piece was widened to whole seconds when asked for, and neighbours
    overlapped by up to a second, fetched and stored twice. The first and last piece
    reach less than a second outside the span, as any whole-second request does."""
    step = timedelta(seconds=max(1, int(piece_s)))
    at = span.starts.replace(microsecond=0)
    end = span.ends if span.ends.microsecond == 0 else span.ends.replace(microsecond=0) + timedelta(seconds=1)
    pieces = []
    while at < end:
        pieces.append(Span(at, min(end, at + step)))
        at += step
    return pieces
