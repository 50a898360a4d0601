"""Is the relay getting every clip to S3? One evaluation, for every place that says so.

/healthz, the status page's badge and `axis-relay status` all show what ``evaluate``
returns, so they can never disagree. Three levels:

- ``ok``: clips arrive and reach the destination; nothing needs a person.
- ``degraded``: something needs attention, but clips still flow or wait safely (a clip
  in quarantine, a silent camera, a gap the back-fill cannot close, a camera's clock,
  a camera that fails its TLS handshake, a certificate near its end, the ledger, the
  other gateway of a pair silent).
- ``failing``: clips are not reaching S3, or are being refused (credentials, bucket,
  a dead endpoint, a full spool, an expired certificate).

Each reason names its cause and the fix. The systemd watchdog is a different question
(is the process alive?): a restart cures neither a wrong key nor a dead S3.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

from relay.camera.answers import CLOCK_TOLERANCE_S
from relay.config import RelayConfig
from relay.ingest.handshakes import FIXES as HANDSHAKE_FIXES
from relay.ingest.handshakes import trouble_message
from relay.ops.stats import RelayStats
from relay.spool.spool import Spool
from relay.spool.store import SpoolStore

Level = Literal["ok", "degraded", "failing"]
LEVELS: tuple[Level, ...] = ("ok", "degraded", "failing")

# A clip refused for a full spool keeps health failing this long (devices do not resend).
REFUSING_WINDOW_S = 60.0
# Quarantined clips count while the latest is younger than this (then they are history).
QUARANTINE_WINDOW_S = 24 * 3600.0
CERT_WARNING_S = 30 * 86400.0


@dataclass(frozen=True)
class DiskFacts:
    """What health reads from the spool's disk: read in a thread (``read``), once per
    look, so that a slow or hung disk never stalls the event loop that answers devices."""

    writable: bool
    free_bytes: int
    quarantined: int  # clips in quarantine now
    quarantined_recent: int  # ... of them quarantined in the last QUARANTINE_WINDOW_S
    quarantined_latest: float | None  # when the latest was (epoch s)
    quarantine_why: str  # its reason

    @classmethod
    def read(cls, store: SpoolStore, now: float) -> DiskFacts:
        """Blocking: call it with asyncio.to_thread."""
        recent, latest, why = store.quarantine_summary(now - QUARANTINE_WINDOW_S)
        return cls(store.writable(), store.free_bytes(), store.quarantined_count(), recent, latest, why)


@dataclass(frozen=True)
class Reason:
    code: str
    level: Level
    message: str
    fix: str
    since: float | None = None  # epoch seconds, when known
    camera: str | None = None

    def as_json(self) -> dict[str, object]:
        out = asdict(self)
        out["since"] = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds") if self.since else None
        if self.camera is None:
            out.pop("camera")
        return out


@dataclass(frozen=True)
class Health:
    status: Level
    reasons: tuple[Reason, ...]

    @property
    def exit_code(self) -> int:
        """What `axis-relay status` exits with: 0 ok, 1 degraded, 2 failing."""
        return LEVELS.index(self.status)


@dataclass(frozen=True)
class HealthRules:
    """What the evaluation needs of the config, and nothing more."""

    upload_failing_after_s: float
    upload_stall_s: float
    # A continuous camera is silent with no clip for this long (cadence + grace).
    silent_after_s: Mapping[str, float]
    backfill: bool
    # A pair's peer is silent after this long without its heartbeat moving (ha.peer_silent_s).
    peer_silent_s: float = 300.0

    @classmethod
    def of(cls, config: RelayConfig) -> HealthRules:
        silent = {
            name: device.camera.cadence_s + device.camera.grace_s
            for name, device in config.devices.items()
            if device.camera is not None and device.camera.expect == "continuous"
        }
        return cls(
            config.health.upload_failing_after_s,
            config.metrics.upload_stall_s,
            silent,
            config.backfill.enabled,
            config.ha.peer_silent_s,
        )


def human_duration(seconds: float) -> str:
    """26 s, 3 min, 2 h 5 min, 3 d 4 h: one form wherever the relay states a duration."""
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    if s < 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(round(s / 3600), 24)
    return f"{d} d {h} h" if h else f"{d} d"


def evaluate(
    stats: RelayStats,
    spool: Spool,
    rules: HealthRules,
    disk: DiskFacts,
    *,
    ledger_failing: tuple[float, str] | None = None,
    now: float | None = None,
) -> Health:
    now = time.time() if now is None else now
    reasons = [
        *_delivery(stats, spool, rules, now),
        *_spool(stats, spool, disk, now),
        *_cameras(stats, rules, now),
        *_certificate(stats, now),
        *_peer(stats, rules, now),
    ]
    if ledger_failing is not None:
        since, why = ledger_failing
        reasons.append(
            Reason(
                "ledger_unwritable",
                "degraded",
                f"the clip ledger {why}; clips still flow, but their history and gap detection wait",
                "free disk on the spool's file system or check its permissions; the relay writes the notes kept "
                "in memory once it can",
                since,
            )
        )
    status: Level = max((r.level for r in reasons), key=LEVELS.index, default="ok")
    return Health(status, tuple(sorted(reasons, key=lambda r: -LEVELS.index(r.level))))


def _delivery(stats: RelayStats, spool: Spool, rules: HealthRules, now: float) -> list[Reason]:
    waiting = spool.queued_clips
    if (refusal := stats.destination_refusal) is not None:
        return [
            Reason(
                "destination_refused",
                "failing",
                f"{refusal.message}; {waiting} clip(s) wait in the spool, none is lost, delivery is paused",
                f"{refusal.fix}; then restart the relay if the fix is in its config (systemctl restart "
                "axis-relay), or send it SIGHUP if it was made in AWS (systemctl reload axis-relay): the waiting "
                "clips go up by themselves",
                refusal.since,
            )
        ]
    failing = stats.upload_failing_since
    if failing is not None and waiting and now - failing >= rules.upload_failing_after_s:
        return [
            Reason(
                "uploads_failing",
                "failing",
                f"every upload attempt has failed for {human_duration(now - failing)}, {waiting} clip(s) waiting: "
                f"{stats.last_upload_error}",
                "check the uplink and the destination (axis-relay s3 check); clips wait safely in the spool and go "
                "up when it answers",
                failing,
            )
        ]
    oldest = spool.oldest_pending_at()
    last = stats.last_upload_at or stats.started_at
    if oldest is not None and now - last > rules.upload_stall_s:
        return [
            Reason(
                "uploads_stalled",
                "failing",
                f"clips wait and nothing was uploaded for {human_duration(now - last)} (metrics.upload_stall_s)",
                "look at the log for upload_stalled and upload_retry; check the uplink's speed",
                last,
            )
        ]
    return []


def _spool(stats: RelayStats, spool: Spool, disk: DiskFacts, now: float) -> list[Reason]:
    reasons = []
    if not disk.writable:
        reasons.append(
            Reason(
                "spool_unwritable",
                "failing",
                f"the spool {spool.store.queue_dir} is not writable: clips are refused",
                "check the spool directory's owner and permissions, and that its file system is mounted read-write",
            )
        )
    free = disk.free_bytes
    if free < spool.limits.min_free_bytes:
        reasons.append(
            Reason(
                "disk_low",
                "failing",
                f"free disk {free / 1e6:.0f} MB is below spool.min_free_bytes "
                f"({spool.limits.min_free_bytes / 1e6:.0f} MB): new clips are refused or old ones evicted",
                "free disk on the spool's file system, or lower spool.min_free_bytes",
            )
        )
    refused_at = stats.last_refused_spool_full_at
    if refused_at is not None and now - refused_at < REFUSING_WINDOW_S:
        reasons.append(
            Reason(
                "spool_full",
                "failing",
                f"the spool is full: clips were refused (507) {human_duration(now - refused_at)} ago, and devices "
                "do not resend them",
                'free disk, raise spool.max_bytes, or set spool.full_policy = "evict_oldest"',
                refused_at,
            )
        )
    recent, latest, why = disk.quarantined_recent, disk.quarantined_latest, disk.quarantine_why
    if recent and latest is not None:
        reasons.append(
            Reason(
                "clips_quarantined",
                "degraded",
                f"{recent} clip(s) quarantined in the last 24 h, the latest {human_duration(now - latest)} ago: {why}",
                "see 'axis-relay spool list', fix the cause, then 'axis-relay spool retry' (or 'axis-relay spool "
                "discard' for clips that can never be delivered)",
                latest,
            )
        )
    return reasons


def _cameras(stats: RelayStats, rules: HealthRules, now: float) -> list[Reason]:
    reasons = []
    for camera, after in sorted(rules.silent_after_s.items()):
        last = stats.last_clip_at.get(camera)
        quiet = now - (last or stats.started_at)
        if quiet > after:
            when = f"its last clip came {human_duration(quiet)} ago" if last else "no clip since the relay started"
            reasons.append(
                Reason(
                    "camera_silent",
                    "degraded",
                    f"{camera} sends no clips: {when} (expected every {human_duration(after)} at the latest)",
                    f"check {camera}'s power and network, and its recipient and schedule: axis-relay camera check "
                    f"{camera}",
                    last or stats.started_at,
                    camera,
                )
            )
    if rules.backfill:
        for camera, (overdue, unfillable) in sorted(stats.gap_attention.items()):
            parts = [f"{overdue} gap(s) open longer than backfill.retry_max_s"] if overdue else []
            parts += [f"{unfillable} gap(s) unfillable in the last 24 h (footage lost)"] if unfillable else []
            reasons.append(
                Reason(
                    "gaps_open",
                    "degraded",
                    f"{camera}: {' and '.join(parts)}",
                    f"see 'axis-relay gaps --camera {camera}': the reason says whether the camera's API, its SD card "
                    "or its retention is the cause",
                    camera=camera,
                )
            )
    for camera, missing_s in sorted(stats.coverage_missing_s.items()):
        if missing_s > 0:
            reasons.append(
                Reason(
                    "coverage_missing_in_s3",
                    "degraded",
                    f"{camera}: {human_duration(missing_s)} of footage the ledger counts as delivered is no longer in "
                    "S3 (found by the coverage audit)",
                    "check the bucket's lifecycle rules and who may delete objects; while the camera's card still "
                    f"holds it, back-fill fetches it again ('axis-relay coverage --camera {camera} --source both')",
                    since=stats.coverage_audited_at,
                    camera=camera,
                )
            )
    for camera, status in sorted(stats.cameras.items()):
        offset = status.clock_offset_s
        if status.clock_synced is False or (offset is not None and abs(offset) >= CLOCK_TOLERANCE_S):
            said = "is not NTP-synced" if status.clock_synced is False else f"is {offset:+.1f} s off the relay's"
            reasons.append(
                Reason(
                    "camera_clock",
                    "degraded",
                    f"{camera}'s clock {said}: footage times and gap detection are off",
                    f"set an NTP server on {camera} (axis-relay camera check {camera} shows it)",
                    camera=camera,
                )
            )
    for camera, trouble in sorted(stats.tls_trouble.items()):
        reasons.append(
            Reason(
                "tls_handshake_failing",
                "degraded",
                trouble_message(camera, trouble),
                HANDSHAKE_FIXES.get(trouble.reason, HANDSHAKE_FIXES["other"]),
                trouble.since,
                camera,
            )
        )
    return reasons


def _peer(stats: RelayStats, rules: HealthRules, now: float) -> list[Reason]:
    """A pair whose other relay is silent is one gateway again: clips still reach S3
    (this relay uploads every camera's, after ha.peer_delay_s), but nothing stands in
    for this one if it fails too."""
    pair = stats.pair
    if pair is None or (silent := pair.peer_silent_for(now)) <= rules.peer_silent_s:
        return []
    peer = pair.peer
    name = f"{peer.relay_id} ({peer.url})" if peer.relay_id else peer.url
    why = f": {peer.heartbeat_error}" if peer.heartbeat_error else ""
    lan = " and does not answer on its port" if peer.reachable is False else ""
    return [
        Reason(
            "peer_silent",
            "degraded",
            f"the peer relay {name} has written no heartbeat to S3 for {human_duration(silent)}{lan}{why}; this relay "
            "now uploads every camera's clips and back-fills alone",
            "bring the peer gateway back (systemctl status axis-relay on it); if it was retired for good, remove "
            "site.peers here",
            now - silent,
        )
    ]


def _certificate(stats: RelayStats, now: float) -> list[Reason]:
    ends = stats.cert_not_after
    if ends is None:
        return []
    fix = "renew it (axis-relay gen-cert, or your CA), then systemctl reload axis-relay"
    if ends <= now:
        day = datetime.fromtimestamp(ends, UTC).date().isoformat()
        return [Reason("cert_expired", "failing", f"the relay's TLS certificate expired on {day}", fix, ends)]
    if ends - now < CERT_WARNING_S:
        return [
            Reason(
                "cert_expiring",
                "degraded",
                f"the relay's TLS certificate expires in {human_duration(ends - now)}: cameras that validate it will "
                "then refuse to send",
                fix,
            )
        ]
    return []
