"""The back-fill soak: several cameras on a schedule with random drops, a relay killed
with SIGKILL mid-run, an S3 outage; at the end, how much of each camera's time is in
S3, frame by frame. Run short by the suite (tests/test_soak.py) and at a real 15 s
cadence by ``bench/soak.py``.

The cameras are emulated (tests/support/vapix_camera.py) and record continuously; one
restarts mid-run, so a few seconds of its time were never recorded anywhere: that is
the time back-fill cannot fill, and "fillable" leaves it out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.backfill import camera_section, frames_in_s3, ledger_gaps
from tests.support.faultproxy import Faults, in_front_of
from tests.support.footage import frames_between
from tests.support.harness import TLS, raw_config, wait_until, write_config
from tests.support.relay_process import relay_process
from tests.support.vapix_camera import FILENAME_TEMPLATE, CameraEmulator

RESTART_HOLE_S = 4.0
SCAN_S = 0.5


@dataclass
class CameraCoverage:
    seconds: float  # from the first clip's start to the last clip's end
    in_s3_s: float  # of the recorded time
    unrecorded_s: float  # never on the card (the camera's restart)

    @property
    def fillable_s(self) -> float:
        return self.seconds - self.unrecorded_s

    @property
    def fraction_of_fillable(self) -> float:
        return min(1.0, self.in_s3_s / self.fillable_s) if self.fillable_s else 1.0


@dataclass
class SoakResult:
    coverage: dict[str, CameraCoverage]
    clips_made: int
    clips_dropped: int  # dropped on purpose (buffer errors)
    clips_refused: int  # the relay was down (killed) when the camera sent them
    gaps: Counter[str] = field(default_factory=Counter)  # by state
    kill_at: str = ""
    outage_s: float = 0.0
    wall_s: float = 0.0


async def soak(
    workdir: Path,
    tls: TLS,
    s3_endpoint: str,
    s3: Any,
    bucket: str,
    *,
    cameras: int = 3,
    cadence_s: float = 2.0,
    clips: int = 18,
    drop_rate: float = 0.15,
    seed: int = 1,
    settle_timeout_s: float = 120.0,
) -> SoakResult:
    rng = random.Random(seed)
    began = time.monotonic()
    emulators = [CameraEmulator(f"soak-{i}", frame_bytes=256) for i in range(cameras)]
    async with contextlib.AsyncExitStack() as stack:
        for camera in emulators:
            await stack.enter_async_context(camera.serving(tls.server_context()))
        faults = Faults()
        proxy = await stack.enter_async_context(in_front_of(s3_endpoint, faults))
        devices = {
            c.name: {
                "token": f"tok-{c.name}",
                "filename_template": FILENAME_TEMPLATE,
                "camera": camera_section(c, tls, cadence_s=cadence_s, grace_s=cadence_s * 2),
            }
            for c in emulators
        }
        raw = raw_config(
            workdir,
            tls,
            proxy.endpoint_url,
            bucket,
            devices=devices,
            backfill={"scan_interval_s": SCAN_S, "retry_initial_s": 0.2, "retry_max_s": 2.0, "margin_s": 0.5},
        )
        config_path = write_config(workdir / "relay.toml", raw)
        relay = await stack.enter_async_context(relay_process(config_path, tls.client_context()))
        # The cameras' time counts from here: the relay is watching them (and the first
        # clip may be one of those dropped).
        start = emulators[0].now().replace(microsecond=0) + timedelta(seconds=1)
        for camera in emulators:
            camera.record(start - timedelta(minutes=2))
        restart_at = start + timedelta(seconds=cadence_s * clips * 0.45)
        _restart(emulators[0], start - timedelta(minutes=2), restart_at)

        made = dropped = refused = 0
        kill_clip, outage_clip = clips // 3, (2 * clips) // 3
        outage_began = 0.0
        result = SoakResult({}, 0, 0, 0)
        for n in range(1, clips + 1):
            clip_end = start + timedelta(seconds=n * cadence_s)
            await _until(emulators[0], clip_end)
            if n == kill_clip:
                await relay.kill()  # SIGKILL: whatever was in flight, uploads and exports too
                result.kill_at = f"clip {n}"
            if n == kill_clip + 2:
                await relay.start()
            if n == outage_clip:
                faults.reset_connections, faults.after_bytes = 10**9, 0
                proxy.abort_all()
                outage_began = time.monotonic()
            if n == outage_clip + 3:
                faults.reset_connections = 0
                result.outage_s = round(time.monotonic() - outage_began, 1)
            sends = []
            for camera in emulators:
                made += 1
                if rng.random() < drop_rate:
                    dropped += 1  # the device's buffer error: made, never sent
                    continue
                sends.append(_send(camera, relay.device, clip_end - timedelta(seconds=cadence_s), clip_end, n))
            refused += sum(not ok for ok in await asyncio.gather(*sends))
        # A short schedule may end inside the outage or the kill: end both now.
        if faults.reset_connections:
            faults.reset_connections = 0
            result.outage_s = round(time.monotonic() - outage_began, 1)
        if relay.pid is None:
            await relay.start()
        end = start + timedelta(seconds=clips * cadence_s)
        # A clip dropped at the very end has no later clip to show it missing: only the
        # silence rule finds it, once cadence + grace have passed (and a scan ran).
        await _until(emulators[0], end + timedelta(seconds=cadence_s * 3 + 2 * SCAN_S))

        # Everything found is settled and everything fetched is uploaded.
        def done() -> bool:
            gaps = ledger_gaps(workdir / "spool" / "ledger.sqlite3")
            queue = workdir / "spool" / "queue"
            active = any(g.state not in ("filled", "unfillable") and g.span.ends <= end for g in gaps)
            return not active and queue.is_dir() and not any(queue.iterdir())

        await wait_until(done, timeout=settle_timeout_s, what="gaps settled and the spool empty")
        for camera in emulators:
            have = await frames_in_s3(s3, bucket, camera.name)
            wanted = set(frames_between(start, end, snap_to_key=False))
            unrecorded = _unrecorded(camera, start, end)
            result.coverage[camera.name] = CameraCoverage(
                seconds=(end - start).total_seconds(),
                # Of the recorded time only: what exists nowhere cannot count either way.
                in_s3_s=len((wanted - unrecorded) & have) / 10,
                unrecorded_s=len(unrecorded & wanted) / 10,
            )
        for gap in ledger_gaps(workdir / "spool" / "ledger.sqlite3"):
            if gap.span.starts < end:
                result.gaps[gap.state] += 1
    result.clips_made, result.clips_dropped, result.clips_refused = made, dropped, refused
    result.wall_s = round(time.monotonic() - began, 1)
    return result


def _restart(camera: CameraEmulator, since: datetime, at: datetime) -> None:
    """The camera restarts at ``at``: its recording stops, and a new one starts a few
    seconds later (no footage of those seconds exists anywhere)."""
    camera.recordings.clear()
    camera.record(since, at)
    camera.record(at + timedelta(seconds=RESTART_HOLE_S))


def _unrecorded(camera: CameraEmulator, start: datetime, end: datetime) -> set[int]:
    recorded: set[int] = set()
    for r in camera.recordings:
        recorded |= set(frames_between(max(r.starts, start), min(r.stops or end, end), snap_to_key=False))
    return set(frames_between(start, end, snap_to_key=False)) - recorded


async def _until(camera: CameraEmulator, moment: datetime) -> None:
    # The schedule's pace (a clip is sent when its footage ends), not a wait for a result.
    delay = (moment - camera.now()).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)


async def _send(camera: CameraEmulator, device: Any, starts: datetime, ends: datetime, sequence: int) -> bool:
    """One clip to the relay as its device; False when the relay was not there to take it."""
    path = f"/upload/{camera.name}?accessToken=tok-{camera.name}"
    try:
        answer = await camera.push(device, path, starts, ends, sequence)
    except (OSError, asyncio.IncompleteReadError):
        return False
    return answer.status == 200
