"""This relay's part in a pair, as upload and back-fill ask it.

Upload: a camera's primary uploads its clips at once; the secondary holds each of its
copies back for ``ha.peer_delay_s``, then looks for the primary's copy in S3 and
uploads only when there is none (relay.upload.workers).

Back-fill (relay.backfill.filler): a gap in this relay's ledger is judged against the
bucket, not the ledger: footage the peer stored is no gap. What S3 lacks is fetched
only by the relay holding the camera's lease (relay.pair.leases), and not while the
peer, alive, still holds clips from that time in its queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from relay.backfill.gaps import Span, missing_seconds
from relay.config import RelayConfig
from relay.coverage.bucket import read_bucket
from relay.coverage.survey import layouts
from relay.ledger import LedgerWriter
from relay.ops.stats import PairStatus, PeerStatus, RelayStats
from relay.pair.leases import Leases
from relay.pair.peer import PeerWatch, heartbeat_key
from relay.pair.split import primary_of
from relay.spool.clip import ClipMeta
from relay.spool.spool import Spool
from relay.upload.s3 import open_client

# Less footage missing than this is no reason to ask a camera.
NOTHING_S = 0.5
# A clip whose footage S3 holds but for this much is not uploaded again: about a frame.
HELD_BUT_S = 0.1


@dataclass(frozen=True)
class Verdict:
    """A gap judged against the bucket: the footage S3 holds in it, and whether to
    fetch the rest now (``wait_s`` None) or later, and why."""

    in_s3: list[Span]
    missing_s: float
    wait_s: float | None = None
    reason: str = ""

    @property
    def in_s3_already(self) -> bool:
        """Too little is missing to ask a camera for: the gap is settled."""
        return self.missing_s < NOTHING_S


# Where the peer's copy of a clip is in S3, if it is there (S3Destination.stored_by_peer).
FindCopy = Callable[[ClipMeta], Awaitable[str | None]]


class Pair:
    def __init__(
        self,
        config: RelayConfig,
        client: Any,
        stats: RelayStats,
        spool: Spool,
        ledger: LedgerWriter,
        find_copy: FindCopy,
    ) -> None:
        # The config checks both.
        assert config.s3 is not None
        assert config.ingest.public_url is not None
        own, peer = config.ingest.public_url, config.site.peers[0]
        self.status = stats.pair = PairStatus(
            config.site.relay_id, own, PeerStatus(peer, heartbeat_key(config.ha.prefix, peer))
        )
        self.status.primary = {d: primary_of(d, (own, peer)) == own for d in config.devices}
        self._config = config
        self._client = client
        self._find_copy = find_copy
        self._bucket = config.s3.bucket
        self._layouts = layouts(config.s3)
        self.leases = Leases(
            client,
            config.s3.bucket,
            config.ha.prefix,
            self.status,
            [name for name, device in config.devices.items() if device.camera is not None],
            config.ha.lease_slot_s,
        )
        self.watch = PeerWatch(client, config.s3.bucket, config.ha.prefix, stats, spool, ledger, config.ha.heartbeat_s)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, config: RelayConfig, stats: RelayStats, spool: Spool, ledger: LedgerWriter, find_copy: FindCopy
    ) -> AsyncIterator[Pair]:
        assert config.s3 is not None
        async with open_client(config.s3) as (client, _):
            yield cls(config, client, stats, spool, ledger, find_copy)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.leases.run(), name="pair-leases")
            group.create_task(self.watch.run(), name="pair-heartbeat")

    # ----- upload ---------------------------------------------------------

    def secondary(self, meta: ClipMeta) -> bool:
        """Does the peer upload this clip first? (Back-fill's own clips: never.)"""
        return meta.origin == "device" and not self.status.primary.get(meta.camera, True)

    def hold_back_s(self, meta: ClipMeta) -> float:
        """How much longer the secondary waits before it looks for the peer's copy."""
        if not self.secondary(meta):
            return 0.0
        return meta.received.timestamp() + self._config.ha.peer_delay_s - time.time()

    def stale(self, meta: ClipMeta) -> bool:
        """A device's clip that waited so long (an outage, a relay down with it queued)
        that the peer may have back-filled its footage meanwhile."""
        return meta.origin == "device" and time.time() - meta.received.timestamp() > self._config.ha.peer_silent_s

    async def stored_by_peer(self, meta: ClipMeta) -> str | None:
        """Where S3 holds this clip already: the peer's copy (the same bytes); or, for a
        stale clip, footage the peer fetched back while this relay was down (else its
        clip would be a second copy of that time). None: upload it."""
        if (key := await self._find_copy(meta)) is not None or not self.stale(meta):
            return key
        if meta.starts is None or meta.ends is None:
            return None
        span = Span(meta.starts, meta.ends)
        # read_bucket keeps only objects that overlap the span (and those it cannot place).
        reading = await read_bucket(self._client, self._bucket, self._layouts, meta.camera, span)
        covering = [(o.key, o.span) for o in reading.objects if o.span is not None]
        if not covering or missing_seconds(span, [s for _, s in covering]) > HELD_BUT_S:
            return None
        return covering[0][0]

    def delivered_by_peer(self, meta: ClipMeta) -> None:
        self.status.delivered_by_peer[meta.camera] += 1

    # ----- back-fill ------------------------------------------------------

    async def judge(self, camera: str, gap: Span, *, fillable: bool) -> Verdict:
        """What of ``gap`` the bucket lacks, and whether this relay fetches it now.
        ``fillable``: the camera can be asked at all (else only S3 is looked at)."""
        reading = await read_bucket(self._client, self._bucket, self._layouts, camera, gap)
        in_s3 = [span for o in reading.objects if (span := o.span) is not None]
        missing = missing_seconds(gap, in_s3)
        verdict = Verdict(in_s3, missing)
        if verdict.in_s3_already or not fillable:
            return verdict
        ha, peer, now = self._config.ha, self.status.peer, time.time()
        if self.status.peer_silent_for(now) < ha.peer_silent_s:
            # The peer lives: what it received of this time is in its queue or in S3. Its
            # heartbeat must be from after the gap's clips reached it (and its secondary
            # wait), and its queue must hold none of them, before the camera is asked.
            told = (gap.ends + timedelta(seconds=ha.peer_delay_s)).timestamp()
            if peer.heartbeat_at is None or peer.heartbeat_at < told:
                return Verdict(in_s3, missing, ha.heartbeat_s, "waiting for the peer's heartbeat after this time")
            queued = peer.queued_from.get(camera)
            if queued is not None and queued < gap.ends.timestamp():
                why = f"the peer still has clips of {camera} from that time queued; waiting for its uploads"
                return Verdict(in_s3, missing, ha.heartbeat_s, why)
        if not self.leases.held(camera):
            holder = self.status.lease_holder.get(camera) or "nobody yet"
            return Verdict(in_s3, missing, self.leases.next_slot_in(), f"back-fill of {camera} is leased to {holder}")
        return verdict
