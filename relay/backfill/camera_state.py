"""What back-fill knows of each camera between calls: whether it answers, and its clock.

A camera's clips and its card are on its own clock, so gaps are found on that clock:
``now()`` is the relay's now moved by the offset last measured (from the camera's
Date header), once the offset is past rounding. The clock is asked about every
``CLOCK_CHECK_S`` (every round while it is wrong), and again as soon as a camera that
failed answers once more. The
state lives in ``RelayStats.cameras``, where the metrics read it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from relay.camera.answers import CLOCK_TOLERANCE_S, CameraError
from relay.camera.vapix import VapixClient
from relay.ops.stats import CameraStatus

log = structlog.get_logger("relay.backfill")

CLOCK_CHECK_S = 600.0


class CameraState:
    def __init__(self, name: str, status: CameraStatus) -> None:
        self.name = name
        self.status = status
        self._clock_checked: float | None = None
        self._clock_wrong = False

    def now(self) -> datetime:
        """Now on the camera's clock."""
        offset = self.status.clock_offset_s or 0.0
        return datetime.now(UTC) + timedelta(seconds=offset if abs(offset) >= CLOCK_TOLERANCE_S else 0.0)

    def failed(self, exc: CameraError) -> None:
        if self.status.reachable is not False and exc.transient:
            log.warning("camera_unreachable", camera=self.name, reason=str(exc))
        self.status.reachable = False
        self.status.last_error = str(exc)
        self._clock_checked = None  # ask about its clock again once it answers

    def answered(self) -> None:
        if self.status.reachable is False:
            log.info("camera_reachable", camera=self.name)
        self.status.reachable = True
        self.status.last_error = None

    async def check_clock(self, client: VapixClient) -> None:
        """Ask the camera about its clock, when due; never raises for the camera's sake."""
        loop_time = asyncio.get_running_loop().time()
        if self._clock_checked is not None and loop_time - self._clock_checked < CLOCK_CHECK_S:
            return
        try:
            clock = await client.clock()
        except CameraError as exc:
            self.failed(exc)
            return
        self._clock_checked = loop_time
        self.answered()
        self.status.clock_synced = clock.synced
        self.status.clock_offset_s = clock.offset_s
        wrong = clock.synced is False or abs(clock.offset_s or 0.0) >= CLOCK_TOLERANCE_S
        if wrong:
            # Asked again every round while it is wrong, so that health clears within a
            # round of the fix ("as fast as the fall"); it costs one call per round.
            self._clock_checked = None
        elif self._clock_wrong:
            log.info("camera_clock_fixed", camera=self.name, ntp_synced=clock.synced, offset_s=clock.offset_s)
        was_wrong, self._clock_wrong = self._clock_wrong, wrong
        if wrong and not was_wrong:
            # Not trusted blindly: gaps are still found on the camera's own clock (its
            # clips and its card agree), with "now" moved by the measured offset.
            log.warning(
                "camera_clock_unsynced",
                camera=self.name,
                ntp_synced=clock.synced,
                offset_s=clock.offset_s,
                fix="turn on NTP on the camera (System > Date and time) and check it reaches the server",
            )
