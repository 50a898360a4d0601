"""A pair's part of /healthz and of /metrics (relay.pair): the peer, and per camera who
uploads first, who holds the back-fill lease, what the peer stored. The status page and
`axis-relay status` render the report; a relay without a peer has neither."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from relay.ops.stats import PairStatus


def metrics(pair: PairStatus) -> Iterator[Metric]:
    by_peer = CounterMetricFamily(
        "axis_relay_clips_delivered_by_peer",
        "Clips this relay received and found stored by the pair's other relay (nothing uploaded)",
        labels=["device"],
    )
    for device in sorted(pair.primary):
        by_peer.add_metric([device], pair.delivered_by_peer.get(device, 0))
    yield by_peer
    held = GaugeMetricFamily(
        "axis_relay_backfill_lease_held", "1 while this relay holds the camera's back-fill lease", labels=["device"]
    )
    for device, mine in sorted(pair.lease_held.items()):
        held.add_metric([device], 1 if mine else 0)
    yield held
    yield CounterMetricFamily(
        "axis_relay_backfill_lease_moves", "Leases this relay took over from its peer", value=pair.lease_moves
    )
    yield CounterMetricFamily(
        "axis_relay_lease_requests", "S3 requests made for back-fill leases", value=pair.lease_requests
    )
    if pair.peer.reachable is not None:
        yield GaugeMetricFamily(
            "axis_relay_peer_reachable", "1 when the peer's ingest port answered", value=int(pair.peer.reachable)
        )
    yield GaugeMetricFamily(
        "axis_relay_peer_silent_seconds",
        "Seconds since the peer's heartbeat in S3 last moved (since start, if never)",
        value=pair.peer_silent_for(time.time()),
    )


def report(pair: PairStatus, now: float) -> dict[str, Any]:
    """The pair as /healthz and `axis-relay status` show it: the peer, and per camera who
    uploads first, who holds the back-fill lease, when the peer last stored one."""
    peer = pair.peer
    return {
        "relay_id": pair.relay_id,
        "peer": {
            "url": peer.url,
            "relay_id": peer.relay_id,
            "reachable": peer.reachable,
            "unreachable_because": peer.probe_error or None,
            "heartbeat_age_s": round(pair.peer_silent_for(now), 1) if peer.heard_at else None,
            "heartbeat_problem": peer.heartbeat_error or None,
            "queued_clips": peer.queued_clips,
        },
        "cameras": {
            camera: {
                "primary": pair.relay_id if mine else (peer.relay_id or peer.url),
                "lease_holder": pair.lease_holder.get(camera) or None,
                "peer_last_stored_age_s": round(now - t, 1) if (t := peer.last_stored.get(camera)) else None,
                "delivered_by_peer": pair.delivered_by_peer.get(camera, 0),
            }
            for camera, mine in sorted(pair.primary.items())
        },
    }
