"""Is the other relay of the pair alive, and what has it stored?

Each relay writes a small heartbeat object every ``ha.heartbeat_s``, at a key made from
its own URL (``<prefix>relays/<url>.json``), and reads the peer's, at the key made from
the URL site.peers names: its id, when it last stored a clip of each camera, what it
has queued (per camera, where that footage begins: the peer back-fills none of it). A
heartbeat that stops moving for ``ha.peer_silent_s`` makes health "degraded"; one that
is never found at all means the two configs disagree on a URL, and the status says
which key was looked for.

Besides, a connection to the peer's ingest port (TCP, and the TLS handshake where it is
https), closed at once, says whether it is reachable on the LAN: a relay can be alive
in S3 and unreachable from its cameras, or the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from relay.ledger import LedgerWriter
from relay.ops.stats import PairStatus, RelayStats
from relay.ops.version import VERSION
from relay.spool.spool import Spool
from relay.upload.failures import no_such_key

log = structlog.get_logger("relay.pair")

PROBE_TIMEOUT_S = 5.0


def heartbeat_key(prefix: str, relay_url: str) -> str:
    return f"{prefix}relays/{re.sub(r'[^A-Za-z0-9.-]+', '_', relay_url)}.json"


def _iso(moment: float | None) -> str | None:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds") if moment is not None else None


def _epoch(text: object) -> float | None:
    return datetime.fromisoformat(text).timestamp() if isinstance(text, str) and text else None


class PeerWatch:
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        stats: RelayStats,
        spool: Spool,
        ledger: LedgerWriter,
        heartbeat_s: float,
    ) -> None:
        assert stats.pair is not None
        self._client = client
        self._bucket = bucket
        self._status: PairStatus = stats.pair
        self._stats = stats
        self._spool = spool
        self._ledger = ledger
        self._every = heartbeat_s
        self._own_key = heartbeat_key(prefix, self._status.url)
        self._last_seen: object = None
        self._last_error = ""

    async def run(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:
                # A bug here must not end the relay: clips flow without a heartbeat.
                log.exception("heartbeat_error")
            await asyncio.sleep(self._every)

    async def beat(self) -> None:
        """One round: write ours, read the peer's, knock on its port."""
        await asyncio.gather(self._write(), self._read(), self._probe())

    async def _heartbeat(self) -> bytes:
        status = self._status
        # None when the ledger cannot be read: the peer then waits for a heartbeat that says.
        queued_from = await self._ledger.run(lambda ledger: ledger.clips.queued_from())
        return json.dumps(
            {
                "relay": status.relay_id,
                "url": status.url,
                "version": VERSION,
                "at": _iso(time.time()),
                "last_stored": {c: _iso(t) for c, t in sorted(self._stats.last_stored_at.items())},
                "queued_clips": self._spool.queued_clips,
                "queued_from": queued_from,
                "leases": sorted(c for c, held in status.lease_held.items() if held),
            },
            indent=1,
        ).encode()

    async def _write(self) -> None:
        try:
            await self._client.put_object(
                Bucket=self._bucket, Key=self._own_key, Body=await self._heartbeat(), ContentType="application/json"
            )
        except (ClientError, BotoCoreError, OSError) as exc:
            log.warning("heartbeat_unwritten", key=self._own_key, error=str(exc)[:200])

    async def _read(self) -> None:
        peer = self._status.peer
        try:
            answer = await self._client.get_object(Bucket=self._bucket, Key=peer.heartbeat_key)
            async with answer["Body"] as stream:
                beat = json.loads(await stream.read())
        except ClientError as exc:
            missing = no_such_key(exc)
            self._fail(
                f"no heartbeat at {peer.heartbeat_key}: is the peer running, with ingest.public_url = {peer.url}?"
                if missing
                else f"reading {peer.heartbeat_key}: {exc}"
            )
            return
        except (BotoCoreError, OSError, ValueError) as exc:
            self._fail(f"reading {peer.heartbeat_key}: {exc}")
            return
        peer.heartbeat_error = self._last_error = ""
        at = beat.get("at")
        if at != self._last_seen:
            # A change seen is proof of life now; the first one read only of its own time
            # (it may be an hour old: the peer is down), by the peer's clock.
            stamp = _epoch(at)
            peer.heard_at = time.time() if self._last_seen is not None or stamp is None else min(stamp, time.time())
            self._last_seen = at
        peer.relay_id = str(beat.get("relay") or "") or None
        stored = beat.get("last_stored") or {}
        peer.last_stored = {c: t for c, text in stored.items() if (t := _epoch(text)) is not None}
        peer.heartbeat_at = _epoch(at)
        peer.queued_clips = int(beat.get("queued_clips") or 0)
        queued = beat.get("queued_from")
        # A heartbeat that could not read its ledger says nothing of its queue: all of it waits.
        peer.queued_from = (
            {c: t for c, text in queued.items() if (t := _epoch(text)) is not None}
            if isinstance(queued, dict)
            else {c: 0.0 for c in self._status.primary}
        )

    def _fail(self, why: str) -> None:
        self._status.peer.heartbeat_error = why
        if why != self._last_error:
            log.warning("peer_heartbeat_unread", error=why)
            self._last_error = why

    async def _probe(self) -> None:
        peer = self._status.peer
        where = urlsplit(peer.url)
        context = None
        if where.scheme == "https":
            # Liveness only: nothing is sent, so nothing needs the peer's certificate trusted.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        port = where.port or (443 if context else 80)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                _, writer = await asyncio.open_connection(where.hostname, port, ssl=context)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            error = str(exc) or type(exc).__name__
            if peer.reachable is not False:
                log.warning("peer_unreachable", peer=peer.url, error=error)
            peer.reachable, peer.probe_error = False, error
            return
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        if peer.reachable is False:
            log.info("peer_reachable", peer=peer.url)
        peer.reachable, peer.probe_error = True, ""
