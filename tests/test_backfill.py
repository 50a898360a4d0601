"""Footage a camera never delivered is found in the ledger and fetched back from its SD
card, against an emulated camera (a real HTTPS server that speaks VAPIX) and the test
S3: the frames in S3 are checked against the frames the camera recorded."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from relay.config import RelayConfig, parse_config
from relay.dev.local_s3 import LocalS3, free_port
from relay.ledger import Ledger
from tests.support.backfill import (
    FAST_BACKFILL,
    backfill_config,
    camera_section,
    footage_in_s3,
    ledger_gaps,
    settled,
    wait_for_footage,
)
from tests.support.faultproxy import Faults, in_front_of
from tests.support.footage import frame_time, frames_between
from tests.support.harness import (
    DEVICE,
    PATH,
    TLS,
    axis_relay,
    http_get,
    list_keys,
    metric,
    raw_config,
    running_relay,
    wait_until,
    write_config,
)
from tests.support.relay_process import relay_process
from tests.support.vapix_camera import FILENAME_TEMPLATE, CameraEmulator, Gauge

CADENCE = 5.0


def config_for(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: dict[str, Any] | None, **extra: Any
) -> RelayConfig:
    return parse_config(backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera, **extra), environ={})


async def all_missing_footage_in_s3(s3: Any, bucket: str, camera: CameraEmulator, start: Any, end: Any) -> None:
    await wait_for_footage(s3, bucket, camera.name, set(frames_between(start, end, snap_to_key=False)))


async def test_dropped_clips_by_sequence_and_by_time_are_fetched_back(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=12 * CADENCE)
    camera.record(start - timedelta(minutes=5))
    config = config_for(tmp_path, tls, s3_server, bucket, camera_section(camera, tls))
    async with running_relay(config, tls) as relay:
        # Clip 4 dropped (its #s is skipped); clip 9 delivered without its first 3 s
        # (a hole in time while #s stays contiguous, as field tests saw).
        await camera.run_schedule(relay.device, PATH, start, 8, CADENCE, drop={4})
        nine = start + timedelta(seconds=8 * CADENCE)
        await camera.push(relay.device, PATH, nine + timedelta(seconds=3), nine + timedelta(seconds=CADENCE), 9)
        for n in (10, 11, 12):
            begin = start + timedelta(seconds=(n - 1) * CADENCE)
            await camera.push(relay.device, PATH, begin, begin + timedelta(seconds=CADENCE), n)

        def both_settled() -> bool:
            gaps = ledger_gaps(config.ledger_path)
            return len(gaps) == 2 and settled(gaps)

        await wait_until(both_settled, timeout=30, what="both gaps settled")
        gaps = ledger_gaps(config.ledger_path)
        assert [(g.cause, g.state) for g in gaps] == [("sequence", "filled"), ("coverage", "filled")]
        four = start + timedelta(seconds=3 * CADENCE)
        assert abs((gaps[0].span.starts - four).total_seconds()) < 0.2
        assert abs(gaps[0].seconds - CADENCE) < 0.2
        assert abs(gaps[1].seconds - 3) < 0.2
        await all_missing_footage_in_s3(s3, bucket, camera, start, start + timedelta(seconds=12 * CADENCE))

        # What was fetched is the missing footage (and the margin and key frame around
        # it), under the back-fill key, beside the camera's clips; nothing else.
        backfilled = await footage_in_s3(s3, bucket, camera.name, only="/backfill/")
        assert len(backfilled) == 2, sorted(backfilled)
        for key, frames in backfilled.items():
            assert key.startswith(f"{DEVICE}/{four:%Y/%m/%d}/backfill/"), key
            gap = next(
                g for g in gaps if g.span.starts - timedelta(seconds=2) <= frame_time(min(frames)) <= g.span.ends
            )
            # Exactly what was asked: the gap and its margin, in whole seconds (the start
            # floored, the stop ceiled), from the key frame at or before the start.
            margin = timedelta(seconds=FAST_BACKFILL["margin_s"])
            asked_from = (gap.span.starts - margin).replace(microsecond=0)
            asked_to = gap.span.ends + margin
            if asked_to.microsecond:
                asked_to = asked_to.replace(microsecond=0) + timedelta(seconds=1)
            around = frames_between(asked_from, asked_to, snap_to_key=True)
            assert frames <= set(around), key
        _status, text = await http_get(relay.metrics_url + "/metrics")
        assert metric(text, f'axis_relay_gaps{{camera="{DEVICE}",state="filled"}}') == 2
        assert metric(text, "axis_relay_backfill_clips_total") == 2


async def test_a_relay_restart_mid_schedule_is_a_gap_and_is_filled(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=10 * CADENCE)
    camera.record(start - timedelta(minutes=5))
    config = config_for(tmp_path, tls, s3_server, bucket, camera_section(camera, tls))
    async with running_relay(config, tls) as relay:
        await camera.run_schedule(relay.device, PATH, start, 4, CADENCE)
    # Clips 5-7 were made while the relay was down: the camera could not deliver them.
    async with running_relay(config, tls) as relay:
        for n in range(8, 11):
            begin = start + timedelta(seconds=(n - 1) * CADENCE)
            await camera.push(relay.device, PATH, begin, begin + timedelta(seconds=CADENCE), n)
        await wait_until(lambda: settled(ledger_gaps(config.ledger_path)), timeout=30, what="the gap settled")
        [gap] = ledger_gaps(config.ledger_path)
        assert (gap.cause, gap.state) == ("sequence", "filled")
        assert abs(gap.seconds - 3 * CADENCE) < 0.2
        assert "00005-00007" in gap.found
        await all_missing_footage_in_s3(s3, bucket, camera, start, start + timedelta(seconds=10 * CADENCE))


async def test_a_camera_unreachable_then_back(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=5 * CADENCE)
    camera.record(start - timedelta(minutes=5))
    camera.down = True
    config = config_for(tmp_path, tls, s3_server, bucket, camera_section(camera, tls))
    async with running_relay(config, tls) as relay:
        await camera.run_schedule(relay.device, PATH, start, 5, CADENCE, drop={3})

        def retried() -> bool:
            return any(g.state == "retrying" and g.attempts >= 2 for g in ledger_gaps(config.ledger_path))

        await wait_until(retried, timeout=30, what="the gap retried while the camera is unreachable")
        [gap] = ledger_gaps(config.ledger_path)
        assert "unreachable" in gap.reason
        _, text = await http_get(relay.metrics_url + "/metrics")
        assert metric(text, f'axis_relay_camera_reachable{{camera="{DEVICE}"}}') == 0
        assert relay.stats.clips_uploaded == 4  # uploads go on meanwhile

        camera.down = False
        await wait_until(lambda: settled(ledger_gaps(config.ledger_path)), timeout=30, what="the gap filled")
        assert [g.state for g in ledger_gaps(config.ledger_path)] == ["filled"]
        await all_missing_footage_in_s3(s3, bucket, camera, start, start + timedelta(seconds=5 * CADENCE))
        _, text = await http_get(relay.metrics_url + "/metrics")
        assert metric(text, f'axis_relay_camera_reachable{{camera="{DEVICE}"}}') == 1


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("no recording", "no recording on the card covers it"),
        ("no card", "no SD card"),
        ("card failed", "no SD card: SD_DISK is failed"),
        ("no access", "no camera access configured"),
    ],
)
async def test_footage_that_cannot_be_had_is_unfillable_with_the_reason(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator, setup: str, words: str
) -> None:
    start = camera.now() - timedelta(seconds=4 * CADENCE)
    if setup == "no recording":
        camera.record(start + timedelta(seconds=2.5 * CADENCE))  # recording began after the gap
    elif setup == "no card":
        camera.disk_status = None
    elif setup == "card failed":
        camera.disk_status = "failed"
    section = None if setup == "no access" else camera_section(camera, tls)
    config = config_for(tmp_path, tls, s3_server, bucket, section)
    with structlog.testing.capture_logs() as logs:
        async with running_relay(config, tls) as relay:
            await camera.run_schedule(relay.device, PATH, start, 4, CADENCE, drop={2})
            await wait_until(lambda: settled(ledger_gaps(config.ledger_path)), timeout=30, what="the gap settled")
    [gap] = ledger_gaps(config.ledger_path)
    assert gap.state == "unfillable"
    assert words in gap.reason
    [event] = [e for e in logs if e["event"] == "gap_unfillable"]
    assert event["camera"] == DEVICE
    assert words in event["reason"]
    assert abs(event["seconds"] - CADENCE) < 0.2
    assert not [e for e in camera.exports]


async def test_an_export_cut_off_half_way_is_fetched_again_and_stored_once(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=4 * CADENCE)
    camera.record(start - timedelta(minutes=5))
    camera.cut_exports = 1
    config = config_for(tmp_path, tls, s3_server, bucket, camera_section(camera, tls))
    async with running_relay(config, tls) as relay:
        await camera.run_schedule(relay.device, PATH, start, 4, CADENCE, drop={2})
        await wait_until(lambda: settled(ledger_gaps(config.ledger_path)), timeout=30, what="the gap settled")
        await all_missing_footage_in_s3(s3, bucket, camera, start, start + timedelta(seconds=4 * CADENCE))
        assert [g.state for g in ledger_gaps(config.ledger_path)] == ["filled"]
        broken = [e for e in camera.exports if e[3] < 0]
        whole = [e for e in camera.exports if e[3] > 0]
        assert len(broken) == 1
        assert len(whole) == 1
        assert broken[0][1:3] == whole[0][1:3]  # the same range, asked for again whole
        assert len(await list_keys(s3, bucket)) == 3 + 1  # three pushed clips, one back-filled
        ledger = Ledger.open_readonly(config.ledger_path)
        try:
            backfill_rows = [c for c in ledger.clips.find() if c.origin == "backfill"]
        finally:
            ledger.close()
        assert len(backfill_rows) == 1
        assert backfill_rows[0].starts_source == "matroska"


async def test_a_gap_spanning_two_recordings_with_a_restart_between(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=6 * CADENCE)
    restart = start + timedelta(seconds=2.5 * CADENCE)
    # The camera restarted mid-gap: two recordings, three seconds of nothing between.
    camera.record(start - timedelta(minutes=5), restart)
    camera.record(restart + timedelta(seconds=3))
    config = config_for(tmp_path, tls, s3_server, bucket, camera_section(camera, tls))
    async with running_relay(config, tls) as relay:
        await camera.run_schedule(relay.device, PATH, start, 6, CADENCE, drop={2, 3, 4})
        await wait_until(lambda: settled(ledger_gaps(config.ledger_path)), timeout=30, what="the gap settled")
        [gap] = ledger_gaps(config.ledger_path)
        assert gap.state == "filled"
        assert abs(gap.missing_s - 3) < 0.2
        assert "never recorded" in gap.reason
        exported_from = {e[0] for e in camera.exports if e[3] > 0}
        assert len(exported_from) == 2
        missing = set(frames_between(restart, restart + timedelta(seconds=3), snap_to_key=False))
        wanted = set(frames_between(start, start + timedelta(seconds=6 * CADENCE), snap_to_key=False)) - missing
        await wait_for_footage(s3, bucket, camera.name, wanted)


async def test_a_camera_busy_answer_is_retried(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=4 * CADENCE)
    camera.record(start - timedelta(minutes=5))
    camera.xml_error = 10  # "still processing", HTTP 200 with an XML GeneralError
    config = config_for(tmp_path, tls, s3_server, bucket, camera_section(camera, tls))
    with structlog.testing.capture_logs() as logs:
        async with running_relay(config, tls) as relay:
            await camera.run_schedule(relay.device, PATH, start, 4, CADENCE, drop={3})
            await wait_until(lambda: settled(ledger_gaps(config.ledger_path)), timeout=30, what="the gap settled")
    assert [g.state for g in ledger_gaps(config.ledger_path)] == ["filled"]
    [retry] = [e for e in logs if e["event"] == "gap_retrying"]
    assert "error 10" in retry["reason"]


async def test_footage_listed_but_refused_at_export_is_not_called_filled(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=4 * CADENCE)
    camera.record(start - timedelta(minutes=5))
    # The card deleted it between the list and the export: error 150, outside the recording.
    camera.xml_error, camera.xml_error_on = 150, "/axis-cgi/record/export/"
    config = config_for(tmp_path, tls, s3_server, bucket, camera_section(camera, tls))
    async with running_relay(config, tls) as relay:
        await camera.run_schedule(relay.device, PATH, start, 4, CADENCE, drop={3})
        await wait_until(lambda: settled(ledger_gaps(config.ledger_path)), timeout=30, what="the gap settled")
    [gap] = ledger_gaps(config.ledger_path)
    assert gap.state == "unfillable"
    assert "refused to export" in gap.reason
    assert camera.xml_error is None  # the error was really answered


async def test_a_clock_that_is_not_synced_is_reported_and_its_own_time_used(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    # Two minutes ahead and not synced: its clips and its card are on its own clock.
    camera.clock_offset_s = 120.0
    camera.ntp_synced = False
    start = camera.now() - timedelta(seconds=3 * CADENCE)
    camera.record(start - timedelta(minutes=5))
    section = camera_section(camera, tls, cadence_s=CADENCE, grace_s=2.0)
    config = config_for(tmp_path, tls, s3_server, bucket, section)
    with structlog.testing.capture_logs() as logs:
        async with running_relay(config, tls) as relay:
            # Back-fill's first round (its clock check) before the clips: a fresh relay
            # reads the bucket first, and clips of past footage sent meanwhile would look
            # like a camera that went quiet between them.
            await wait_until(lambda: any(e["event"] == "camera_clock_unsynced" for e in logs), what="round one")
            await camera.run_schedule(relay.device, PATH, start, 3, CADENCE)
            # Then it goes quiet. On the relay's clock its last clip ends two minutes in
            # the future; only on the camera's own is it silent, and the gap found.

            def silent_gap() -> bool:
                return any(g.cause == "silence" and g.state == "filled" for g in ledger_gaps(config.ledger_path))

            await wait_until(silent_gap, timeout=30, what="a silence gap on the camera's clock")
            _, text = await http_get(relay.metrics_url + "/metrics")
    assert metric(text, f'axis_relay_camera_clock_synced{{camera="{DEVICE}"}}') == 0
    assert 118 <= metric(text, f'axis_relay_camera_clock_offset_seconds{{camera="{DEVICE}"}}') <= 122
    [warning] = [e for e in logs if e["event"] == "camera_clock_unsynced"]
    assert warning["ntp_synced"] is False
    assert "NTP" in warning["fix"]
    gap = next(g for g in ledger_gaps(config.ledger_path) if g.cause == "silence")
    last_end = start + timedelta(seconds=3 * CADENCE)
    assert abs((gap.span.starts - last_end).total_seconds()) < 0.2
    assert gap.span.ends <= camera.now()


async def test_an_events_camera_has_gaps_only_where_a_sequence_number_is_skipped(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=60)
    camera.record(start - timedelta(minutes=5))
    config = config_for(tmp_path, tls, s3_server, bucket, camera_section(camera, tls, expect="events"))
    async with running_relay(config, tls) as relay:
        # Events 20 s apart (time between them is no gap), and event 3 never delivered.
        for n, offset in ((1, 0), (2, 20), (4, 50)):
            begin = start + timedelta(seconds=offset)
            await camera.push(relay.device, PATH, begin, begin + timedelta(seconds=4), n)
        await wait_until(lambda: settled(ledger_gaps(config.ledger_path)), timeout=30, what="the gap settled")
        [gap] = ledger_gaps(config.ledger_path)
        assert (gap.cause, gap.state) == ("sequence", "filled")
        assert abs((gap.span.starts - (start + timedelta(seconds=24))).total_seconds()) < 0.2
        assert abs((gap.span.ends - (start + timedelta(seconds=50))).total_seconds()) < 0.2


async def test_operators_list_gaps_and_fetch_a_range_by_hand(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=4 * CADENCE)
    camera.record(start - timedelta(minutes=10))
    raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls))
    path = write_config(tmp_path / "relay.toml", raw)
    async with running_relay(parse_config(raw, environ={}), tls) as relay:
        await camera.run_schedule(relay.device, PATH, start, 4, CADENCE, drop={2})
        await wait_until(lambda: settled(ledger_gaps(relay.config.ledger_path)), timeout=30, what="the gap settled")
        code, out, err = await axis_relay("gaps", "--json", "--camera", DEVICE, "--since", "1h", "--config", str(path))
        assert code == 0, err
        [listed] = json.loads(out)
        assert {k: listed[k] for k in ("camera", "state", "cause")} == {
            "camera": DEVICE,
            "state": "filled",
            "cause": "sequence",
        }
        assert datetime.fromisoformat(listed["start"]).tzinfo is not None
        assert listed["start"].endswith("Z")
        assert listed["reason"]
        code, table, _ = await axis_relay("gaps", "--config", str(path))
        assert code == 0
        assert "1 gap(s): 1 filled" in table

        # By hand: a range from before the card's retention, and one the card holds.
        old = (camera.now() - timedelta(days=3)).isoformat()
        older = (camera.now() - timedelta(days=3, seconds=-60)).isoformat()
        code, out, err = await axis_relay(
            "backfill", "--camera", DEVICE, "--from", old, "--to", older, "--config", str(path)
        )
        assert code == 0, err
        assert "queued for back-fill" in out
        recent = (start - timedelta(minutes=5)).isoformat()
        recent_end = (start - timedelta(minutes=4)).isoformat()
        code, out, err = await axis_relay(
            "backfill", "--camera", DEVICE, "--from", recent, "--to", recent_end, "--config", str(path)
        )
        assert code == 0, err

        def manual_settled() -> bool:
            manual = [g for g in ledger_gaps(relay.config.ledger_path) if g.cause == "manual"]
            return len(manual) == 2 and settled(manual)

        await wait_until(manual_settled, timeout=30, what="both ranges asked for by hand settled")
        by_hand = [g for g in ledger_gaps(relay.config.ledger_path) if g.cause == "manual"]
        assert [g.state for g in by_hand] == ["unfillable", "filled"]
        assert "retention passed" in by_hand[0].reason
        await all_missing_footage_in_s3(s3, bucket, camera, start - timedelta(minutes=5), start - timedelta(minutes=4))

    # Bad input gets a clear error and exit 2.
    for args, words in (
        (("backfill", "--camera", "cam-nope", "--from", "2h", "--to", "1h"), "no device 'cam-nope'"),
        (("backfill", "--camera", DEVICE, "--from", "1h", "--to", "2h"), "must be after --from"),
        (("backfill", "--camera", DEVICE, "--from", "yesterday", "--to", "1h"), "--from/--to 'yesterday'"),
        (("gaps", "--since", "last week"), "--since 'last week'"),
    ):
        code, _, err = await axis_relay(*args, "--config", str(path))
        assert code == 2, (args, err)
        assert words in err, err


async def test_a_camera_that_never_sends_a_clip_is_fetched_from_its_card(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    # Its rule is broken (or its first clips were all lost): only its card has footage.
    camera.record(camera.now() - timedelta(minutes=5))
    section = camera_section(camera, tls, cadence_s=1.0, grace_s=1.0)
    config = config_for(tmp_path, tls, s3_server, bucket, section)
    async with running_relay(config, tls) as relay:
        watching_from = camera.now()

        def silent_gap_filled() -> bool:
            gaps = ledger_gaps(config.ledger_path)
            return any(g.cause == "silence" and g.state == "filled" and g.seconds >= 1 for g in gaps)

        await wait_until(silent_gap_filled, timeout=30, what="a silence gap from the watch start, filled")
        first = ledger_gaps(config.ledger_path)[0]
        assert abs((first.span.starts - watching_from).total_seconds()) < 1.5
        assert relay.stats.clips_accepted == 0
        await all_missing_footage_in_s3(s3, bucket, camera, first.span.starts, first.span.ends)


async def test_a_relay_killed_mid_export_goes_on_and_stores_each_piece_once(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    start = camera.now() - timedelta(seconds=5 * CADENCE)
    camera.record(start - timedelta(minutes=5))
    camera.export_pace_s = 0.3  # a slow card: the kill lands while a piece streams
    raw = backfill_config(
        tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls), backfill={"piece_s": 2.0}
    )
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
        await camera.run_schedule(relay.device, PATH, start, 5, CADENCE, drop={3})
        await asyncio.wait_for(camera.exporting.wait(), 30)
        await relay.kill()  # SIGKILL mid-export: the piece in flight is half in incoming/
        await relay.start()
        ledger_path = tmp_path / "spool" / "ledger.sqlite3"
        await wait_until(lambda: settled(ledger_gaps(ledger_path)), timeout=60, what="the gap settled after the kill")
        [gap] = ledger_gaps(ledger_path)
        assert gap.state == "filled"
        await all_missing_footage_in_s3(s3, bucket, camera, start, start + timedelta(seconds=5 * CADENCE))
        await wait_until(lambda: not any((tmp_path / "spool" / "queue").iterdir()), what="the spool empty")
    assert camera.abandoned, "the kill did not land mid-export"
    # The range cut off is asked for again and stored once.
    assert camera.abandoned[0][:2] in [e[1:3] for e in camera.exports]
    keys = [k for k in await list_keys(s3, bucket) if "/backfill/" in k]
    assert not [k for k in keys if "~" in k]  # no piece stored twice under another name
    ledger = Ledger.open_readonly(tmp_path / "spool" / "ledger.sqlite3")
    try:
        pieces = sorted((c.starts_at, c.ends_at) for c in ledger.clips.find() if c.origin == "backfill")
    finally:
        ledger.close()
    assert len(pieces) == len(keys)
    # The ranges asked of the card and sent whole: one per stored piece, each at most
    # piece_s (2 s), each beginning where the one before ended (no second fetched twice),
    # together covering the 5 s gap. (A piece's footage reaches back to its key frame.)
    asked = sorted({(begin, end) for _, begin, end, sent in camera.exports if sent > 0})
    assert len(asked) == len(pieces), asked
    assert all(timedelta(0) < end - begin <= timedelta(seconds=2) for begin, end in asked), asked
    assert all(prev_end == begin for (_, prev_end), (begin, _) in itertools.pairwise(asked)), asked
    assert asked[-1][1] - asked[0][0] >= timedelta(seconds=CADENCE), asked


# Back-fill's limits --------------------------------------------------------------------


async def test_exports_are_one_per_camera_and_max_concurrent_over_all(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any
) -> None:
    """Three cameras, two gaps each, a slow card: never two exports from one camera at
    once, and never more than backfill.max_concurrent (2) over all of them."""
    over_all = Gauge()
    cameras = [CameraEmulator(f"cam-{n}", export_pace_s=0.05) for n in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for cam in cameras:
            cam.export_gauges.append(over_all)
            await stack.enter_async_context(cam.serving(tls.server_context()))
        devices = {
            cam.name: {"token": f"token-{cam.name}", "filename_template": FILENAME_TEMPLATE,
                       "camera": camera_section(cam, tls)}
            for cam in cameras
        }  # fmt: skip
        raw = raw_config(
            tmp_path, tls, s3_server.endpoint_url, bucket, devices=devices,
            backfill={**FAST_BACKFILL, "max_concurrent": 2, "piece_s": 2.0},
        )  # fmt: skip
        async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
            start = cameras[0].now() - timedelta(seconds=6 * CADENCE)
            for cam in cameras:
                cam.record(start - timedelta(minutes=5))
                path = f"/upload/{cam.name}?accessToken=token-{cam.name}"
                await cam.run_schedule(relay.device, path, start, 6, CADENCE, drop={2, 5})
            ledger_path = tmp_path / "spool" / "ledger.sqlite3"
            await wait_until(
                lambda: len(ledger_gaps(ledger_path)) == 6 and settled(ledger_gaps(ledger_path)),
                timeout=90,
                what="six gaps filled",
            )
    assert all(g.state == "filled" for g in ledger_gaps(ledger_path))
    assert [cam.export_gauges[0].peak for cam in cameras] == [1, 1, 1]
    assert over_all.peak == 2  # reached, never passed
    assert sum(len(cam.exports) for cam in cameras) >= 12  # enough exports to overlap


async def test_a_backlog_pauses_back_fill_until_the_device_clips_are_delivered(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    """S3 unreachable, the device clips wait: over backfill.max_queued_bytes nothing is
    fetched from the card (the uplink belongs to what devices send); once they are
    delivered, the gap is filled."""
    faults = Faults(reset_connections=10**9, after_bytes=0)
    async with in_front_of(s3_server.endpoint_url, faults) as proxy:
        raw = backfill_config(
            tmp_path, tls, proxy.endpoint_url, bucket, camera_section(camera, tls),
            backfill={"max_queued_bytes": 1000},
        )  # fmt: skip
        async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
            start = camera.now() - timedelta(seconds=4 * CADENCE)
            camera.record(start - timedelta(minutes=5))
            await camera.run_schedule(relay.device, PATH, start, 4, CADENCE, drop={2})
            ledger_path = tmp_path / "spool" / "ledger.sqlite3"
            await wait_until(lambda: len(ledger_gaps(ledger_path)) == 1, what="the gap detected")
            paused = await relay.wait_for("backfill_paused")
            assert paused["limit"] == 1000
            # The pause is checked before each fill: the gap is known, nothing is fetched.
            assert camera.exports == []
            assert [g.state for g in ledger_gaps(ledger_path)] == ["detected"]
            faults.reset_connections = 0  # S3 back: the clips go, then the gap is filled
            await relay.wait_for("backfill_resumed_after_backlog", timeout=60)
            await wait_until(lambda: settled(ledger_gaps(ledger_path)), timeout=60, what="the gap filled")
    [gap] = ledger_gaps(ledger_path)
    assert gap.state == "filled"
    assert camera.exports


async def test_back_fill_never_evicts_a_device_clip_to_make_room(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    """A spool at its quota under evict_oldest, S3 unreachable: a device's clip would
    evict the oldest, but back-fill waits instead, with the reason, and evicts nothing."""
    dead = f"https://127.0.0.1:{free_port()}"
    raw = backfill_config(
        tmp_path, tls, dead, bucket, camera_section(camera, tls),
        spool={"max_bytes": 3 * 1024 * 1024, "full_policy": "evict_oldest"},
    )  # fmt: skip
    raw["spool"]["dir"] = str(tmp_path / "spool")
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
        # A device's big clip first, near the quota (S3 is down: it stays), then the
        # schedule with a clip dropped: the small clips still fit, a piece of footage not.
        filler = await relay.device.post_clip(PATH, b"\x1aE" + os.urandom(3 * 1024 * 1024 - 200_000))
        assert filler.status == 200
        start = camera.now() - timedelta(seconds=4 * CADENCE)
        camera.record(start - timedelta(minutes=5))
        await camera.run_schedule(relay.device, PATH, start, 4, CADENCE, drop={2})
        ledger_path = tmp_path / "spool" / "ledger.sqlite3"
        await wait_until(
            lambda: any(g.state == "retrying" and "never evicts" in g.reason for g in ledger_gaps(ledger_path)),
            what="back-fill waiting for room",
        )
        queued = {p.name for p in (tmp_path / "spool" / "queue").iterdir()}
    assert not relay.named("clip_evicted")
    assert not relay.named("backfill_clip_stored")
    assert len(queued) == 4  # three of the schedule and the big one: all kept
    assert camera.exports == []
