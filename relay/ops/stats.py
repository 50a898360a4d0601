"""What the relay did, counted separately so no number claims more than it means.

"accepted" is durable on local disk; only "uploaded" means S3 confirmed it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class CameraStatus:
    """What back-fill last learnt of a device's own API (relay.backfill.filler)."""

    access: bool  # a [devices.<name>.camera] section is configured
    cadence_s: float | None = None  # a continuous camera's schedule: a clip at least this often
    reachable: bool | None = None  # None until it was first asked
    last_error: str | None = None
    clock_synced: bool | None = None
    clock_offset_s: float | None = None


@dataclass
class Refusal:
    """The destination refuses the relay itself (relay.upload.failures.DestinationRefused)."""

    code: str
    message: str
    fix: str
    since: float


@dataclass
class HandshakeTrouble:
    """TLS handshakes from a configured camera's address that failed, and no success since."""

    reason: str
    since: float
    last_at: float
    count: int = 0


@dataclass
class PeerStatus:
    """The other relay of a pair, as its heartbeat in S3 and a connection to it tell."""

    url: str
    heartbeat_key: str
    relay_id: str | None = None  # as its heartbeat names it
    reachable: bool | None = None  # a connection to its ingest port; None until tried
    probe_error: str = ""
    heard_at: float | None = None  # our clock, when its heartbeat was last seen to move
    heartbeat_error: str = ""  # why its heartbeat could not be read, if it could not
    last_stored: dict[str, float] = field(default_factory=dict)  # camera -> when it last stored one
    heartbeat_at: float | None = None  # the time its last heartbeat carried (its clock)
    queued_clips: int = 0
    # Per camera, where the footage it still has queued begins: time it will upload.
    queued_from: dict[str, float] = field(default_factory=dict)


@dataclass
class PairStatus:
    """Two gateways per site (relay.pair): this relay's part and what it knows of the peer."""

    relay_id: str
    url: str
    peer: PeerStatus
    watching_since: float = field(default_factory=time.time)
    primary: dict[str, bool] = field(default_factory=dict)  # camera -> this relay uploads first
    lease_holder: dict[str, str] = field(default_factory=dict)  # camera -> relay id holding its slot now
    lease_held: dict[str, bool] = field(default_factory=dict)  # camera -> this relay holds it now
    lease_moves: int = 0  # leases this relay took over from the peer
    lease_requests: int = 0  # S3 requests for leases, to cost them
    delivered_by_peer: Counter[str] = field(default_factory=Counter)  # per device

    def peer_silent_for(self, now: float) -> float:
        return now - (self.peer.heard_at or self.watching_since)


@dataclass
class RelayStats:
    clips_accepted: int = 0
    bytes_accepted: int = 0
    clips_rejected: int = 0
    # Of those rejected: refused with 507 because the spool was full (quota or disk).
    clips_refused_spool_full: int = 0
    last_refused_spool_full_at: float | None = None
    clips_uploaded: int = 0
    bytes_uploaded: int = 0
    clips_quarantined: int = 0
    upload_retries: int = 0
    # Exceptions the upload code did not expect (relay/upload/workers.py says what follows).
    upload_worker_errors: int = 0
    retries_by_reason: Counter[str] = field(default_factory=Counter)
    # Since when upload attempts fail with no delivery in between (None: the last one worked).
    upload_failing_since: float | None = None
    last_upload_error: str = ""
    # Set while the destination refuses the relay's credentials or bucket: delivery pauses.
    destination_refusal: Refusal | None = None
    # Failed TLS handshakes on the ingest port by (reason, device or "").
    tls_handshake_failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    # Per configured camera whose handshakes fail now.
    tls_trouble: dict[str, HandshakeTrouble] = field(default_factory=dict)
    # Requests for a path the ingest port does not serve.
    ingest_unknown_paths: int = 0
    # When the relay's own certificate expires (epoch seconds), once it is loaded.
    cert_not_after: float | None = None
    # How uploaded clips went: "s3", or through API Gateway "post", "handoff", "fallback_s3".
    uploads_by_route: Counter[str] = field(default_factory=Counter)
    last_upload_at: float | None = None
    started_at: float = field(default_factory=time.time)
    last_clip_at: dict[str, float] = field(default_factory=dict)  # per device
    clips_by_device: Counter[str] = field(default_factory=Counter)
    bytes_by_device: Counter[str] = field(default_factory=Counter)
    # Back-fill: gaps found, how they ended, and the footage fetched from SD cards.
    gaps_detected: int = 0
    gaps_settled: Counter[str] = field(default_factory=Counter)
    backfill_clips: int = 0
    backfill_bytes: int = 0
    backfill_errors: int = 0
    cameras: dict[str, CameraStatus] = field(default_factory=dict)
    # (camera, state) -> (count, seconds), over backfill.lookback_hours, from the ledger.
    gap_totals: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    # camera -> (open gaps older than backfill.retry_max_s, gaps found unfillable in 24 h).
    gap_attention: dict[str, tuple[int, int]] = field(default_factory=dict)
    # The last coverage audit (relay.coverage.audit): per camera, the share of its time in
    # S3 and the seconds the ledger counts as delivered that S3 no longer holds.
    coverage_ratio: dict[str, float] = field(default_factory=dict)
    coverage_missing_s: dict[str, float] = field(default_factory=dict)
    coverage_audited_at: float | None = None
    coverage_audited_until: float | None = None  # the end of the last audit's window
    # When this relay last stored a clip of each device in S3 itself (for its peer).
    last_stored_at: dict[str, float] = field(default_factory=dict)
    pair: PairStatus | None = None
    # Upload durations as a histogram: cumulative counts per upper bound (seconds).
    upload_seconds_bounds: tuple[float, ...] = (1, 5, 15, 60, 300, 900, float("inf"))
    upload_seconds_counts: list[int] = field(default_factory=lambda: [0] * 7)
    upload_seconds_sum: float = 0.0

    def observe_upload(self, seconds: float) -> None:
        for i, bound in enumerate(self.upload_seconds_bounds):
            if seconds <= bound:
                self.upload_seconds_counts[i] += 1
        self.upload_seconds_sum += seconds

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        out["retries_by_reason"] = dict(self.retries_by_reason)
        out["uploads_by_route"] = dict(self.uploads_by_route)
        out["gaps_settled"] = dict(self.gaps_settled)
        for detail in (
            "upload_seconds_bounds",
            "upload_seconds_counts",
            "upload_seconds_sum",
            "last_clip_at",
            "clips_by_device",
            "bytes_by_device",
            "last_refused_spool_full_at",
            "cameras",
            "gap_totals",
            "gap_attention",
            "coverage_ratio",
            "coverage_missing_s",
            "coverage_audited_at",
            "coverage_audited_until",
            "upload_failing_since",
            "last_upload_error",
            "destination_refusal",
            "tls_handshake_failures",
            "tls_trouble",
            "cert_not_after",
            "last_stored_at",
            "pair",
        ):
            out.pop(detail)
        out["tls_handshake_failures"] = sum(self.tls_handshake_failures.values())
        if self.pair is not None:
            out["clips_delivered_by_peer"] = sum(self.pair.delivered_by_peer.values())
            out["lease_moves"] = self.pair.lease_moves
        return out
