"""Prometheus ``/metrics``, ``/healthz`` and the status page (``/``) on their own listener.

Health itself is evaluated in relay.ops.health; this module serves it.

Every value is read from the relay's counts and the spool at scrape time, so there
is one bookkeeping, not two that can drift apart; the registry is the relay's own,
not prometheus-client's process-global one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.ingest.connections import ConnectionGuard
from relay.ledger import Ledger, LedgerError, LedgerWriter
from relay.ops import pair_view, timeline
from relay.ops import status as status_page
from relay.ops.health import LEVELS, DiskFacts, Health, HealthRules, evaluate
from relay.ops.stats import RelayStats
from relay.ops.version import BUILD_INFO, VERSION
from relay.spool.spool import Spool

# How long the status page waits for the ledger before it shows what it has.
LEDGER_WAIT_S = 3.0


class RelayCollector(Collector):
    """One scrape's metrics: made per scrape, with the health and disk facts read for it."""

    def __init__(self, seen: Observed, health: Health, disk: DiskFacts) -> None:
        self._stats = seen.stats
        self._spool = seen.spool
        self._connections = seen.connections
        self._health = health
        self._disk = disk

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        for name, help_text, value in (
            ("axis_relay_clips_accepted", "Clips stored durably and answered 200", s.clips_accepted),
            ("axis_relay_bytes_accepted", "Bytes of accepted clips", s.bytes_accepted),
            ("axis_relay_clips_rejected", "Requests refused (4xx/5xx), nothing stored", s.clips_rejected),
            (
                "axis_relay_clips_refused_spool_full",
                "Clips refused with 507: the spool was full",
                s.clips_refused_spool_full,
            ),
            ("axis_relay_clips_evicted", "Clips deleted unsent to make room (evict_oldest)", self._spool.evicted_clips),
            ("axis_relay_bytes_evicted", "Bytes of clips deleted unsent to make room", self._spool.evicted_bytes),
            ("axis_relay_clips_uploaded", "Clips S3 confirmed", s.clips_uploaded),
            ("axis_relay_bytes_uploaded", "Bytes of clips S3 confirmed", s.bytes_uploaded),
            ("axis_relay_clips_quarantined", "Clips moved to quarantine", s.clips_quarantined),
            (
                "axis_relay_upload_worker_errors",
                "Unexpected errors around an upload; the clip waits",
                s.upload_worker_errors,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        retries = CounterMetricFamily("axis_relay_upload_retries", "Upload retries by reason", labels=["reason"])
        for reason, count in sorted(s.retries_by_reason.items()):
            retries.add_metric([reason], count)
        yield retries
        routes = CounterMetricFamily(
            "axis_relay_clips_uploaded_by_route", "Clips uploaded, by the way they went", labels=["route"]
        )
        for route, count in sorted(s.uploads_by_route.items()):
            routes.add_metric([route], count)
        yield routes
        yield GaugeMetricFamily(
            "axis_relay_ingest_connections", "Device connections held now", value=self._connections.open_connections
        )
        yield CounterMetricFamily(
            "axis_relay_ingest_connections_closed",
            "Connections closed for room or for never starting a request (a flood shows here)",
            value=self._connections.closed_idle,
        )
        yield GaugeMetricFamily("axis_relay_spool_clips", "Clips waiting for upload", value=self._spool.queued_clips)
        yield GaugeMetricFamily("axis_relay_spool_bytes", "Bytes waiting for upload", value=self._spool.queued_bytes)
        oldest = self._spool.oldest_pending_at()
        age = time.time() - oldest.timestamp() if oldest else 0.0
        yield GaugeMetricFamily("axis_relay_oldest_pending_age_seconds", "Age of the oldest waiting clip", value=age)
        yield GaugeMetricFamily(
            "axis_relay_last_upload_timestamp_seconds", "When S3 last confirmed a clip", value=s.last_upload_at or 0
        )
        per_device = GaugeMetricFamily(
            "axis_relay_device_last_clip_timestamp_seconds", "When each device last sent a clip", labels=["device"]
        )
        for device, at in sorted(s.last_clip_at.items()):
            per_device.add_metric([device], at)
        yield per_device
        clips = CounterMetricFamily("axis_relay_device_clips", "Clips accepted from each device", labels=["device"])
        sizes = CounterMetricFamily("axis_relay_device_bytes", "Bytes accepted from each device", labels=["device"])
        for device, count in sorted(s.clips_by_device.items()):
            clips.add_metric([device], count)
            sizes.add_metric([device], s.bytes_by_device[device])
        yield clips
        yield sizes
        cadence = GaugeMetricFamily(
            "axis_relay_device_expected_interval_seconds",
            "A continuous camera's schedule: it should send a clip at least this often",
            labels=["device"],
        )
        for device, status in sorted(s.cameras.items()):
            if status.cadence_s is not None:
                cadence.add_metric([device], status.cadence_s)
        yield cadence
        yield GaugeMetricFamily(
            "axis_relay_spool_free_bytes", "Free space on the spool's file system", value=self._disk.free_bytes
        )
        yield GaugeMetricFamily(
            "axis_relay_spool_free_bytes_floor",
            "spool.min_free_bytes: below this new clips are refused or old ones evicted",
            value=self._spool.limits.min_free_bytes,
        )
        yield GaugeMetricFamily(
            "axis_relay_quarantine_clips",
            "Clips in quarantine now (need an operator: 'axis-relay spool list')",
            value=self._disk.quarantined,
        )
        yield from self._backfill()
        if self._stats.pair is not None:
            yield from pair_view.metrics(self._stats.pair)
        yield from self._coverage()
        yield from self._commissioning()
        buckets = [
            ("+Inf" if bound == float("inf") else f"{bound:g}", count)
            for bound, count in zip(s.upload_seconds_bounds, s.upload_seconds_counts, strict=True)
        ]
        yield HistogramMetricFamily(
            "axis_relay_upload_seconds",
            "Time to deliver a clip, retries included",
            buckets=buckets,
            sum_value=s.upload_seconds_sum,
        )

    def _commissioning(self) -> Iterator[Metric]:
        """The relay's version, its health level, and the faults an installer causes."""
        build = GaugeMetricFamily(
            "axis_relay_build_info", "The relay's version and its main libraries'", labels=list(BUILD_INFO)
        )
        build.add_metric(list(BUILD_INFO.values()), 1)
        yield build
        health = self._health
        level = GaugeMetricFamily(
            "axis_relay_health", "1 for the level /healthz reports now (ok, degraded, failing)", labels=["status"]
        )
        for name in LEVELS:
            level.add_metric([name], 1 if health.status == name else 0)
        yield level
        reasons = GaugeMetricFamily(
            "axis_relay_health_reasons", "Reasons /healthz gives now, by code", labels=["code", "level"]
        )
        for (code, lvl), count in sorted(Counter((r.code, r.level) for r in health.reasons).items()):
            reasons.add_metric([code, lvl], count)
        yield reasons
        failures = CounterMetricFamily(
            "axis_relay_tls_handshake_failures",
            "Failed TLS handshakes on the ingest port, by reason, and by camera where the address is a camera's",
            labels=["reason", "device"],
        )
        for (reason, device), count in sorted(self._stats.tls_handshake_failures.items()):
            failures.add_metric([reason, device], count)
        yield failures
        yield CounterMetricFamily(
            "axis_relay_ingest_unknown_paths",
            "Requests for a path the ingest port does not serve (404)",
            value=self._stats.ingest_unknown_paths,
        )
        if self._stats.cert_not_after is not None:
            yield GaugeMetricFamily(
                "axis_relay_tls_cert_not_after_timestamp_seconds",
                "When the relay's TLS certificate expires",
                value=self._stats.cert_not_after,
            )

    def _coverage(self) -> Iterator[Metric]:
        """The last coverage audit (relay.coverage.audit): no samples until one has run."""
        s = self._stats
        ratio = GaugeMetricFamily(
            "axis_relay_coverage_ratio",
            "Share of the device's time over audit.window_hours that S3 holds, at the last audit",
            labels=["device"],
        )
        missing = GaugeMetricFamily(
            "axis_relay_coverage_missing_in_s3_seconds",
            "Seconds of footage the ledger counts as delivered that S3 no longer held at the last audit",
            labels=["device"],
        )
        for device, value in sorted(s.coverage_ratio.items()):
            ratio.add_metric([device], value)
        for device, seconds in sorted(s.coverage_missing_s.items()):
            missing.add_metric([device], seconds)
        yield ratio
        yield missing
        if s.coverage_audited_at is None:
            return
        yield GaugeMetricFamily(
            "axis_relay_coverage_audit_timestamp_seconds",
            "When the last coverage audit ended",
            value=s.coverage_audited_at,
        )

    def _backfill(self) -> Iterator[Metric]:
        s = self._stats
        gaps = GaugeMetricFamily(
            "axis_relay_gaps",
            "Gaps in cameras' footage, by state (over backfill.lookback_hours)",
            labels=["camera", "state"],
        )
        seconds = GaugeMetricFamily(
            "axis_relay_gap_seconds", "Seconds of footage in gaps, by state", labels=["camera", "state"]
        )
        for (camera, state), (count, total) in sorted(s.gap_totals.items()):
            gaps.add_metric([camera, state], count)
            seconds.add_metric([camera, state], total)
        yield gaps
        yield seconds
        yield CounterMetricFamily("axis_relay_gaps_detected", "Gaps found since start", value=s.gaps_detected)
        yield CounterMetricFamily(
            "axis_relay_backfill_clips", "Clips fetched back from SD cards", value=s.backfill_clips
        )
        yield CounterMetricFamily(
            "axis_relay_backfill_bytes", "Bytes fetched back from SD cards", value=s.backfill_bytes
        )
        yield CounterMetricFamily(
            "axis_relay_backfill_errors",
            "Unexpected errors in back-fill (logged as backfill_error)",
            value=s.backfill_errors,
        )
        reachable = GaugeMetricFamily(
            "axis_relay_camera_reachable", "1 when the camera's API last answered", labels=["camera"]
        )
        synced = GaugeMetricFamily(
            "axis_relay_camera_clock_synced", "1 when the camera says its clock is NTP-synced", labels=["camera"]
        )
        offset = GaugeMetricFamily(
            "axis_relay_camera_clock_offset_seconds", "The camera's clock minus the relay's", labels=["camera"]
        )
        for camera, status in sorted(s.cameras.items()):
            if not status.access:
                continue
            if status.reachable is not None:
                reachable.add_metric([camera], 1 if status.reachable else 0)
            if status.clock_synced is not None:
                synced.add_metric([camera], 1 if status.clock_synced else 0)
            if status.clock_offset_s is not None:
                offset.add_metric([camera], status.clock_offset_s)
        yield reachable
        yield synced
        yield offset


def report(health: Health, disk: DiskFacts, stats: RelayStats, spool: Spool, version: str) -> dict[str, Any]:
    """/healthz's JSON: the level and its reasons, then the facts an operator's scripts
    read (``healthy`` and ``problems`` as before: true only when ok, and the messages)."""
    now = time.time()
    oldest = spool.oldest_pending_at()
    return {
        "status": health.status,
        "reasons": [r.as_json() for r in health.reasons],
        "healthy": health.status == "ok",
        "problems": [r.message for r in health.reasons],
        "version": version,
        "queued_clips": spool.queued_clips,
        "queued_bytes": spool.queued_bytes,
        "oldest_pending_age_s": round(now - oldest.timestamp(), 1) if oldest else None,
        "last_upload_age_s": round(now - stats.last_upload_at, 1) if stats.last_upload_at else None,
        "free_disk_bytes": disk.free_bytes,
        "clips_accepted": stats.clips_accepted,
        "clips_uploaded": stats.clips_uploaded,
        "clips_quarantined": stats.clips_quarantined,
        "clips_rejected": stats.clips_rejected,
        "clips_refused_spool_full": stats.clips_refused_spool_full,
        "clips_evicted": spool.evicted_clips,
        "upload_retries": stats.upload_retries,
        "tls_handshake_failures": sum(stats.tls_handshake_failures.values()),
        **({"pair": pair_view.report(stats.pair, now)} if stats.pair is not None else {}),
    }


@dataclass(frozen=True)
class Observed:
    """What the metrics listener reads: the relay's counts, its spool, its ledger."""

    stats: RelayStats
    spool: Spool
    connections: ConnectionGuard
    rules: HealthRules
    ledger: LedgerWriter | None = None
    devices: Sequence[str] = ()
    destination: str = ""

    async def look(self) -> tuple[Health, DiskFacts]:
        """Health now, and the disk facts it was judged on (read in a thread)."""
        now = time.time()
        disk = await asyncio.to_thread(DiskFacts.read, self.spool.store, now)
        failing = None
        if self.ledger is not None and self.ledger.failing_since is not None:
            failing = (self.ledger.failing_since, self.ledger.failure)
        return evaluate(self.stats, self.spool, self.rules, disk, ledger_failing=failing, now=now), disk


def _strips(book: Ledger, devices: Sequence[str], stats: RelayStats) -> dict[str, str]:
    """Each camera's last 24 h (relay.ops.timeline), on the ledger's thread."""
    since = (datetime.now(UTC) - timedelta(days=1)).replace(second=0, microsecond=0)
    audited = stats.coverage_audited_until
    until = datetime.fromtimestamp(audited, UTC) if audited is not None else None
    strips = {}
    for camera in devices:
        gaps = [g for g in book.gaps.find(camera=camera, since=since)]
        states = timeline.minute_states(since, book.clips.by_minute(camera, since), gaps, until)
        strips[camera] = timeline.strip(camera, since, states)
    return strips


def metrics_app(seen: Observed) -> web.Application:
    stats, spool, ledger = seen.stats, seen.spool, seen.ledger

    async def metrics(_: web.Request) -> web.Response:
        health, disk = await seen.look()
        body = generate_latest(RelayCollector(seen, health, disk))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        health, disk = await seen.look()
        body = report(health, disk, stats, spool, VERSION)
        return web.json_response(body, status=503 if health.status == "failing" else 200)

    async def page(_: web.Request) -> web.Response:
        """The status page (relay.ops.status): today is the gateway's local day."""
        today = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
        rows = strips = None
        if ledger is not None:
            # A ledger that cannot be written (full disk) must not hang the page: it
            # shows without the ledger's counts, and says so.
            with contextlib.suppress(LedgerError, TimeoutError):
                async with asyncio.timeout(LEDGER_WAIT_S):
                    rows = await ledger.run(lambda book: book.clips.by_camera(today))
                    strips = await ledger.run(lambda book: _strips(book, seen.devices, stats))
        health, disk = await seen.look()
        text = status_page.page(
            status_page.PageFacts(
                version=VERSION,
                destination=seen.destination,
                devices=list(seen.devices),
                health=health,
                facts=report(health, disk, stats, spool, VERSION),
                stats=stats,
                rows=rows,
                backfill=seen.rules.backfill,
                strips=strips,
            )
        )
        return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
