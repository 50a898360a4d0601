"""Which relay of a pair back-fills a camera now: a lease per camera, per time slot,
kept in the bucket itself.

Time is cut into slots of ``ha.lease_slot_s``. Slot N of a camera is owned by whoever
first creates ``<prefix>lease/<camera>/<N>`` with ``If-None-Match: *``: S3 lets exactly
one create succeed, so no other coordinator is needed, and no ``If-Match`` either
(which not every S3-compatible store has). The holder of slot N tries for N+1 a little
before N ends (``LEAD``); the other relay tries a little after N+1 began (``LAG``), so
while the holder lives it keeps the lease, and when it dies the other takes the first
slot it had not claimed: within one slot, plus the lead and the lag. A relay that finds
a slot taken reads who took it (for the status page, and to recognise its own create
from before a restart).

Requests per camera and slot: the holder creates one key; the other relay tries once
and reads once. With the default 300 s slot, 36 requests per camera-hour for the pair.
Old slot keys are never deleted by the relay (its IAM policy has no delete): a
lifecycle rule on the prefix expires them (docs/setup.md), about 300 bytes each.

The relays' clocks must agree to within ``guard`` (NTP): a lease is not used in the
last ``guard`` seconds of its slot unless the next slot is held too.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from relay.ops.stats import PairStatus
from relay.upload.failures import error_code, no_such_key

log = structlog.get_logger("relay.pair")

# The holder tries for the next slot this share of a slot before it begins; the other
# relay this share after (each at most 5 s, at least the request's own time).
LEAD = 0.2
LAG = 0.1


class Leases:
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        status: PairStatus,
        cameras: Sequence[str],
        slot_s: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = f"{prefix}lease/"
        self._status = status
        self._cameras = list(cameras)
        self._slot_s = slot_s
        self._clock = clock
        self._held: dict[str, set[int]] = {c: set() for c in cameras}
        self.guard_s = min(2.0, slot_s / 10)
        self._lead_s = min(5.0, slot_s * LEAD)
        self._lag_s = min(5.0, slot_s * LAG)

    def key(self, camera: str, slot: int) -> str:
        return f"{self._prefix}{camera}/{slot:012d}"

    def slot_at(self, moment: float) -> int:
        return math.floor(moment / self._slot_s)

    def held(self, camera: str) -> bool:
        """Does this relay hold the camera's back-fill now (and for ``guard_s`` more)?"""
        now = self._clock()
        slot = self.slot_at(now)
        held = self._held.get(camera, set())
        if slot not in held:
            return False
        return now < (slot + 1) * self._slot_s - self.guard_s or slot + 1 in held

    def next_slot_in(self) -> float:
        """Seconds until the next slot begins, plus the other relay's lag: when a lease
        the peer holds could first move here."""
        now = self._clock()
        return (self.slot_at(now) + 1) * self._slot_s + self._lag_s - now

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for camera in self._cameras:
                group.create_task(self._keep(camera), name=f"lease-{camera}")

    async def _keep(self, camera: str) -> None:
        # At start, the slot under way: taken only if no relay holds it (both were down).
        tried = self.slot_at(self._clock())
        await self._attempt(camera, tried)
        while True:
            now = self._clock()
            # The holder tries before its slot ends: the slot after the one tried last.
            following = max(self.slot_at(now), tried) + 1
            holding = following - 1 in self._held[camera]
            at = following * self._slot_s + (-self._lead_s if holding else self._lag_s)
            if at > now:
                await asyncio.sleep(at - now)
            await self._attempt(camera, following)
            tried = following

    async def _attempt(self, camera: str, slot: int) -> None:
        try:
            await self._try(camera, slot)
        except Exception:
            # A bug here must not end the relay: without the lease, back-fill waits.
            log.exception("lease_error", camera=camera, slot=slot)

    async def _try(self, camera: str, slot: int) -> None:
        """Create the slot's key, or learn who did; a store that cannot be reached is
        tried again within the slot (a lease nobody could take waits for the next)."""
        while self.slot_at(self._clock()) <= slot:
            try:
                await self._create_or_read(camera, slot)
                return
            except (ClientError, BotoCoreError, OSError, ValueError) as exc:
                self._status.lease_holder[camera] = ""
                self._status.lease_held[camera] = False  # not for the slot asked for, at least
                log.warning("lease_unavailable", camera=camera, slot=slot, error=str(exc)[:200])
                await asyncio.sleep(min(5.0, self._slot_s / 10))

    async def _create_or_read(self, camera: str, slot: int) -> None:
        status = self._status
        body = json.dumps({"relay": status.relay_id, "url": status.url, "slot": slot, "slot_s": self._slot_s})
        status.lease_requests += 1
        try:
            await self._client.put_object(
                Bucket=self._bucket,
                Key=self.key(camera, slot),
                Body=body.encode(),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if error_code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise
            holder = await self._holder(camera, slot)
        else:
            holder = status.relay_id
        previous = status.lease_holder.get(camera)
        status.lease_holder[camera] = holder
        mine = holder == status.relay_id
        if mine:
            self._held[camera] = {s for s in self._held[camera] if s >= slot - 1} | {slot}
        status.lease_held[camera] = mine
        if mine and previous not in (None, status.relay_id):
            status.lease_moves += 1
            log.info("lease_taken", camera=camera, slot=slot, previous=previous or "nobody")
        elif not mine and previous == status.relay_id:
            log.warning("lease_lost", camera=camera, slot=slot, holder=holder)

    async def _holder(self, camera: str, slot: int) -> str:
        """Who created the slot's key: the peer, or this relay before a restart."""
        self._status.lease_requests += 1
        try:
            answer = await self._client.get_object(Bucket=self._bucket, Key=self.key(camera, slot))
            async with answer["Body"] as stream:
                text = await stream.read()
        except ClientError as exc:
            if no_such_key(exc):
                return ""  # created and removed meanwhile: nobody to name
            raise
        return str(json.loads(text).get("relay", ""))
