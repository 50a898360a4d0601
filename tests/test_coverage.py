"""Coverage proven from S3 itself (#25): every object says which footage it holds, a
camera-day is read from a handful of listings, and `axis-relay coverage` reports the
time in S3 from the device and from back-fill, each hole, and every disagreement between
the bucket and the ledger, with exit 0 only when coverage is complete."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from relay.backfill.gaps import Span
from relay.config import S3Config, parse_config
from relay.coverage.bucket import read_bucket
from relay.coverage.keys import KeyLayout
from relay.coverage.report import judge
from relay.coverage.survey import layouts
from relay.dev.local_s3 import LocalS3
from relay.ledger import ClipRecord
from tests.support.backfill import backfill_config, camera_section, ledger_gaps, wait_for_footage
from tests.support.browser import chromium
from tests.support.footage import clip_bytes, frames_between
from tests.support.harness import (
    DEVICE,
    PATH,
    TLS,
    RunningRelay,
    axis_relay,
    healthz,
    http_get,
    list_keys,
    metric,
    raw_config,
    running_relay,
    wait_until,
    write_config,
)
from tests.support.relay_process import relay_process
from tests.support.vapix_camera import CameraEmulator

DEFAULT = S3Config(bucket="clips")  # the default key templates
CLIP_S = 15


def at(seconds: float, base: datetime = datetime(2026, 12, 2, tzinfo=UTC)) -> datetime:
    return base + timedelta(seconds=seconds)


# ----- what a key tells, and what to list (no server) ---------------------------


def test_the_default_keys_carry_the_footage_and_sort_by_it() -> None:
    device, backfill = KeyLayout(DEFAULT.key_template), KeyLayout(DEFAULT.backfill_key_template)
    assert device.spans_in_key
    assert backfill.spans_in_key
    key = "cam/2026/12/02/20261202T103015.120000_20261202T103030.120000_video26-12-02_10-30-15-12_00042.mkv"
    found = device.span(key)
    assert found is not None
    assert (found.starts, found.ends) == (at(37815.12), at(37830.12))
    kept_apart = key.replace(".mkv", "~20261202T103031.000000Z-0a1b2c3d.mkv")  # two clips, one key
    assert device.span(kept_apart) == found
    assert device.day_prefix("cam", at(3600)) == "cam/2026/12/02/20261202T"
    assert backfill.day_prefix("cam", at(3600)) == "cam/2026/12/02/backfill/20261202T"
    after = device.start_after("cam", at(-600))  # the day before, from 23:50 on
    assert after is not None
    assert after < "cam/2026/12/01/20261201T235000.000000_" < "cam/2026/12/01/20261201T235959.999999_"
    assert after > "cam/2026/12/01/20261201T234959.999999_20261201T235959.000000_x.mkv"


def test_a_template_without_whole_times_is_read_from_metadata() -> None:
    for template in ("{camera}/{filename}", "{camera}/{date:%Y/%m/%d}/{filename}", "{camera}/{start:%H%M%S}_{stem}"):
        layout = KeyLayout(template)
        assert not layout.spans_in_key, template
        assert layout.span("cam/x.mkv") is None
    # The listing still narrows to what can hold the day: here only the camera.
    assert KeyLayout("{camera}/{filename}").day_prefix("cam", at(0)) == "cam/"


def record(key: str, start: float, end: float, state: str = "uploaded") -> ClipRecord:
    return ClipRecord(
        key, "cam", "x.mkv", None, 1, "AAAAAA==", "", "", "device",
        at(start).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), at(end).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "matroska", "matroska", state, "", key, "s3", None, None,  # type: ignore[arg-type]
    )  # fmt: skip


def test_holes_are_what_no_object_covers_and_disagreements_are_both_ways() -> None:
    from relay.coverage.bucket import ObjectFootage

    objects = [
        ObjectFootage("a", 1, at(0), at(15), "device"),
        ObjectFootage("b", 1, at(15), at(30), "device"),
        ObjectFootage("c", 1, at(40), at(60), "backfill"),
        ObjectFootage("d", 1, at(50), at(58), "device"),  # inside c: back-fill counts only what the device lacks
        ObjectFootage("e", 1, None, None, ""),
        ObjectFootage("f", 1, None, None, ""),  # silent, but the ledger knows its footage
    ]
    rows = [record("a", 0, 15), record("b", 15, 30), record("gone", 30, 40), record("f", 60, 70)]
    report = judge(
        "cam", Span(at(0), at(60)), source="both", continuous=True, min_hole_s=2.0,
        objects=objects, ledger_clips=rows,
    )  # fmt: skip
    assert (report.device_s, report.backfill_s) == (38.0, 12.0)
    assert [(h.span.starts, h.span.ends) for h in report.holes] == [(at(30), at(40))]
    assert sorted((d.kind, d.key) for d in report.disagreements) == [
        ("missing_in_s3", "gone"),
        ("not_in_ledger", "c"),
        ("not_in_ledger", "d"),
        ("not_in_ledger", "e"),
    ]
    assert report.unreadable == ["e"]  # "f" counts from the ledger's span (outside the window here)
    # A camera that sends on events: its quiet time is no loss; only a gap the ledger knows is.
    quiet = judge(
        "cam", Span(at(0), at(60)), source="s3", continuous=False, min_hole_s=2.0,
        objects=objects[:1], ledger_clips=rows,
    )  # fmt: skip
    assert (quiet.ratio, quiet.holes, quiet.complete) == (1.0, [], True)
    assert not report.complete
    assert report.ratio == 50 / 60


# ----- against the test S3 --------------------------------------------------------


async def test_a_camera_day_of_the_default_keys_is_read_from_listings_alone(
    s3: Any, s3_server: LocalS3, bucket: str
) -> None:
    """A camera-day of 3-minute clips, listed 50 keys a page (a real day of 15 s clips
    is the same at 1000 a page): one LIST per page of the day's device prefix, one for
    its back-fill prefix, one each for the tails of the day before, and no HEAD. So with
    15 s clips: 2 + ceil(5760 / 1000) + 1 = 9 requests per camera-day."""
    clip_s = 180  # each clip a minute past a multiple of 3: the first began at 23:58 the day before
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    device = KeyLayout(DEFAULT.key_template)
    keys = [
        DEFAULT.key_template.format(
            camera="cam", start=day + timedelta(seconds=60 + clip_s * n),
            end=day + timedelta(seconds=60 + clip_s * (n + 1)), filename=f"video_{n:05d}.mkv", date=day,
            clip_id="x", stem="", ext="", origin="device",
        )
        for n in range(-1, 86400 // clip_s)
    ]  # fmt: skip
    assert all(device.span(k) for k in keys)
    limit = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with limit:
            await s3.put_object(Bucket=bucket, Key=key, Body=b"")

    await asyncio.gather(*(put(k) for k in keys))
    whole_day = Span(day, day + timedelta(days=1))
    reading = await read_bucket(s3, bucket, layouts(DEFAULT), "cam", whole_day, page_size=50)
    assert (reading.list_requests, reading.head_requests) == (2 + 480 // 50 + 1 + 1, 0)
    assert len(reading.objects) == 86400 // clip_s + 1  # the clip that began before midnight too
    covered = judge(
        "cam", whole_day, source="s3", continuous=True, min_hole_s=2.0, objects=reading.objects, ledger_clips=None
    )
    assert covered.complete
    assert covered.device_s == 86400


def coverage_config(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator, **s3: Any
) -> dict[str, Any]:
    raw = backfill_config(
        tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls, cadence_s=15.0),
        backfill={"enabled": False},
    )  # fmt: skip
    raw["s3"].update(s3)
    return raw


async def send(relay: RunningRelay, start: datetime, clips: int) -> None:
    for n in range(clips):
        begins = start + timedelta(seconds=CLIP_S * n)
        data = clip_bytes(DEVICE, begins, begins + timedelta(seconds=CLIP_S))
        name = f"video{begins:%y-%m-%d_%H-%M-%S}-00_{n + 1:05d}.mkv"
        assert (await relay.device.post_clip(PATH, data, filename=name)).status == 200
    await wait_until(lambda: relay.stats.clips_uploaded == clips, what="the clips uploaded")


async def coverage_cli(config_file: Path, start: datetime, end: datetime, *extra: str) -> tuple[int, list[Any]]:
    code, out, err = await axis_relay(
        "coverage", "--config", str(config_file), "--camera", DEVICE,
        "--from", start.isoformat(), "--to", end.isoformat(), "--json", *extra,
    )  # fmt: skip
    assert code in (0, 1), err
    return code, json.loads(out)


async def test_every_object_says_its_footage_and_coverage_finds_a_deletion_and_a_planted_object(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    raw = coverage_config(tmp_path, tls, s3_server, bucket, camera)
    config_file = write_config(tmp_path / "relay.toml", raw)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    end = start + timedelta(seconds=4 * CLIP_S)
    async with running_relay(parse_config(raw, environ={}), tls) as relay:
        await send(relay, start, 4)
        await relay.stop()
    keys = await list_keys(s3, bucket)
    assert len(keys) == 4
    head = await s3.head_object(Bucket=bucket, Key=keys[1])
    meta = head["Metadata"]
    second = start + timedelta(seconds=CLIP_S)
    assert meta["footage-start"] == second.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert meta["footage-end"] == (second + timedelta(seconds=CLIP_S)).isoformat(timespec="milliseconds")[:23] + "Z"
    assert (meta["origin"], meta["times-from"], meta["sequence"], meta["camera"]) == (
        "device", "matroska,matroska", "2", DEVICE,
    )  # fmt: skip

    code, [whole] = await coverage_cli(config_file, start, end, "--source", "both")
    assert code == 0, whole
    assert (whole["device_s"], whole["backfill_s"], whole["ratio"], whole["holes"]) == (60.0, 0.0, 1.0, [])
    # Two prefixes (the device's, back-fill's) for each day the window (less an hour) touches.
    days = len({(start - timedelta(hours=1)).date(), end.date()})
    assert whole["requests"] == {"list": 2 * days, "head": 0}

    # Behind the relay's back: the second clip deleted, a peer's copy of it planted.
    body = await (await s3.get_object(Bucket=bucket, Key=keys[1]))["Body"].read()
    await s3.delete_object(Bucket=bucket, Key=keys[1])
    code, [holed] = await coverage_cli(config_file, start, end, "--source", "s3")
    assert code == 1
    assert [(h["from"][:19], h["to"][:19]) for h in holed["holes"]] == [
        (second.isoformat()[:19], (second + timedelta(seconds=CLIP_S)).isoformat()[:19])
    ]
    planted = keys[1].replace(".mkv", "-peer.mkv")
    await s3.put_object(Bucket=bucket, Key=planted, Body=body)
    code, [both] = await coverage_cli(config_file, start, end, "--source", "both")
    assert code == 1
    assert both["holes"] == []  # the planted copy covers the time...
    assert sorted((d["kind"], d["key"]) for d in both["disagreements"]) == [
        ("missing_in_s3", keys[1]),  # ...but the ledger's object is gone
        ("not_in_ledger", planted),  # and S3 holds one the ledger never saw
    ]
    code, [believed] = await coverage_cli(config_file, start, end, "--source", "ledger")
    assert (code, believed["ratio"], believed["requests"]) == (0, 1.0, {})  # what the relay believes
    code, text, _ = await axis_relay("coverage", "--config", str(config_file), "--from", start.isoformat(),
                                     "--to", end.isoformat(), "--source", "both")  # fmt: skip
    assert code == 1
    assert f"{DEVICE}: INCOMPLETE" in text
    assert "missing in s3" in text
    assert "not in ledger" in text


async def test_with_a_custom_key_template_coverage_reads_each_objects_metadata(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, camera: CameraEmulator
) -> None:
    raw = coverage_config(tmp_path, tls, s3_server, bucket, camera, key_template="{camera}/{filename}")
    config_file = write_config(tmp_path / "relay.toml", raw)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    async with running_relay(parse_config(raw, environ={}), tls) as relay:
        await send(relay, start, 3)
    code, [report] = await coverage_cli(config_file, start, start + timedelta(seconds=3 * CLIP_S))
    assert code == 0, report
    assert report["device_s"] == 45.0
    assert report["requests"] == {"list": 1, "head": 3}  # one prefix for every day; a HEAD per object
    # Three days: the template has no day in its prefix, so it is still listed once.
    _, [days] = await coverage_cli(config_file, start - timedelta(days=3), start + timedelta(seconds=3 * CLIP_S))
    assert days["requests"] == {"list": 1, "head": 3}


async def test_a_replaced_gateway_finds_the_time_it_was_gone_and_uploads_nothing_twice(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    """Relay A receives a continuously recording camera's clips, is SIGKILLed and its
    spool and ledger deleted; the camera records on with no relay; relay B starts on an
    empty state directory with the same config and certificate. B learns from S3 what A
    stored, finds the time between as a gap, fetches it from the card, and stores
    nothing twice: coverage from S3 is complete from A's first clip to B's last."""
    cadence = 5.0
    start = camera.now().replace(microsecond=0) - timedelta(minutes=2, seconds=40)
    camera.record(start - timedelta(minutes=5))
    raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls, cadence_s=cadence))
    config_file = write_config(tmp_path / "relay.toml", raw)
    async with relay_process(config_file, tls.client_context()) as a:
        await camera.run_schedule(a.device, PATH, start, 4, cadence)
        await wait_until(lambda: len(a.named("clip_uploaded")) == 4, what="A's four clips in S3")
        await a.kill()
    shutil.rmtree(tmp_path / "spool")  # the dead gateway's state: gone with its card
    # The camera went on recording with no relay (about two minutes); B takes over now.
    resume = camera.now().replace(microsecond=0)
    first_b = int((resume - start).total_seconds() // cadence) + 1
    resume = start + timedelta(seconds=(first_b - 1) * cadence)
    async with relay_process(config_file, tls.client_context()) as b:
        seeded = await b.wait_for("ledger_seeded_from_s3")
        assert seeded["objects"] == 4
        for n in (first_b, first_b + 1):
            begin = start + timedelta(seconds=(n - 1) * cadence)
            assert (await camera.push(b.device, PATH, begin, begin + timedelta(seconds=cadence), n)).status == 200
        end = resume + timedelta(seconds=2 * cadence)
        await wait_for_footage(s3, bucket, camera.name, set(frames_between(start, end, snap_to_key=False)))
        [gap] = ledger_gaps(tmp_path / "spool" / "ledger.sqlite3")
        assert gap.state == "filled"  # found by its sequence numbers and its time alike
        assert abs((gap.span.starts - (start + timedelta(seconds=4 * cadence))).total_seconds()) < 0.5
        await b.stop()
    code, [report] = await coverage_cli(config_file, start, end, "--source", "s3")
    assert code == 0, report
    assert report["ratio"] == 1.0
    assert report["device_s"] == 6 * cadence
    # Nothing stored twice: A's four clips once, B's two, and back-fill only between.
    reading = await read_bucket(s3, bucket, layouts(S3Config(bucket=bucket)), DEVICE, Span(start, end))
    spans = sorted((o.starts, o.ends, o.origin) for o in reading.objects if o.starts and o.ends)
    assert [o for *_, o in spans].count("device") == 6
    margin = timedelta(seconds=raw["backfill"]["margin_s"] + 1)  # a piece widens to whole seconds
    for (_, ends, _), (starts, _, _) in itertools.pairwise(spans):
        assert ends - starts <= margin, spans


async def test_the_audit_finds_an_object_deleted_behind_the_relays_back_and_back_fills_it(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    cadence = 5.0
    # Older than the audit's settling time: footage still on its way is not missing.
    start = camera.now().replace(microsecond=0) - timedelta(minutes=9)
    camera.record(start - timedelta(minutes=5))
    raw = backfill_config(
        tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls, cadence_s=cadence),
        audit={"interval_s": 0.5, "window_hours": 1},
    )  # fmt: skip
    async with running_relay(parse_config(raw, environ={}), tls) as relay:
        await camera.run_schedule(relay.device, PATH, start, 4, cadence)
        await wait_until(lambda: relay.stats.clips_uploaded == 4, what="four clips in S3")
        audits = relay.stats.coverage_audited_at
        await wait_until(lambda: relay.stats.coverage_audited_at != audits, what="an audit after the uploads")
        assert relay.stats.coverage_missing_s[DEVICE] == 0
        # Its time is owed only since the relay watches it (its first back-fill round,
        # after this footage): no ratio yet, rather than one near 0 that would alert.
        assert DEVICE not in relay.stats.coverage_ratio
        second = sorted(await list_keys(s3, bucket))[1]
        await s3.delete_object(Bucket=bucket, Key=second)  # behind the relay's back

        def reported() -> bool:
            return relay.stats.coverage_missing_s.get(DEVICE) == cadence

        await wait_until(reported, what="the audit reporting the deleted clip's 5 s")
        _, health = await healthz(relay.metrics_url)
        [reason] = [r for r in health["reasons"] if r["code"] == "coverage_missing_in_s3"]
        assert (reason["level"], reason["camera"]) == ("degraded", DEVICE)
        _, metrics = await http_get(relay.metrics_url + "/metrics")
        assert metric(metrics, f'axis_relay_coverage_missing_in_s3_seconds{{device="{DEVICE}"}}') == cadence
        # The camera's card still has it: back-fill brings it back, and the audit says so.
        lost = start + timedelta(seconds=cadence)
        wanted = set(frames_between(lost, lost + timedelta(seconds=cadence), snap_to_key=False))
        await wait_for_footage(s3, bucket, camera.name, wanted)
        await wait_until(lambda: relay.stats.coverage_missing_s.get(DEVICE) == 0, what="the audit seeing it back")
        _, health = await healthz(relay.metrics_url)
        assert "coverage_missing_in_s3" not in [r["code"] for r in health["reasons"]]
        refetched = [k for k in await list_keys(s3, bucket) if "/backfill/" in k]
        assert refetched  # fetched again, as back-fill
        # A lifecycle rule takes the back-filled copy too: the ledger's back-fill row no
        # longer counts as held, so it is fetched a third time.
        for key in refetched:
            await s3.delete_object(Bucket=bucket, Key=key)
        await wait_until(reported, what="the audit reporting the back-filled copy gone")
        await wait_for_footage(s3, bucket, camera.name, wanted)
        await wait_until(lambda: relay.stats.coverage_missing_s.get(DEVICE) == 0, what="the audit seeing it back again")


def test_each_minute_of_the_strip_takes_the_state_that_matters_most() -> None:
    from relay.ledger import GapRecord
    from relay.ops.timeline import minute_states, runs

    since = at(0)

    def gap(first: int, last: int, state: str) -> GapRecord:
        stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
        return GapRecord(
            1, "cam", at(60 * first).strftime(stamp), at(60 * last).strftime(stamp), "coverage", state,  # type: ignore[arg-type]
            "", "", "", "", 0, None, None, 0, 0.0,
        )  # fmt: skip

    minutes = {0: (60.0, 0.0, False), 1: (10.0, 50.0, False), 2: (60.0, 0.0, True), 3: (20.0, 0.0, False)}
    minutes |= {m: (60.0, 0.0, False) for m in (5, 6, 1000)}
    states = minute_states(
        since, minutes, [gap(5, 6, "unfillable"), gap(7, 8, "retrying"), gap(9, 10, "filled")], at(600)
    )
    assert states[:11] == [
        "device", "backfill", "missing", "none", "none", "unfillable", "unfillable", "missing", "missing",
        "none", "none",
    ]  # fmt: skip
    assert states[1000] == "unaudited"  # delivered after the last audit's window
    assert [(r.state, r.first, r.last) for r in runs(states)[:3]] == [
        ("device", 0, 0), ("backfill", 1, 1), ("missing", 2, 2)
    ]  # fmt: skip


async def test_the_status_page_strip_shows_each_minutes_state_in_chromium(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any, camera: CameraEmulator
) -> None:
    raw = backfill_config(
        tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(camera, tls, cadence_s=60.0),
        backfill={"enabled": False}, audit={"interval_s": 0.5, "window_hours": 1},
    )  # fmt: skip
    start = camera.now().replace(second=0, microsecond=0) - timedelta(minutes=15)
    recent = camera.now().replace(second=0, microsecond=0) - timedelta(minutes=3)
    async with running_relay(parse_config(raw, environ={}), tls) as relay:
        await camera.run_schedule(relay.device, PATH, start, 3, 60.0)
        await camera.push(relay.device, PATH, recent, recent + timedelta(minutes=1), 13)
        await wait_until(lambda: relay.stats.clips_uploaded == 4, what="four clips in S3")
        second = sorted(await list_keys(s3, bucket))[1]
        await s3.delete_object(Bucket=bucket, Key=second)
        await wait_until(lambda: relay.stats.coverage_missing_s.get(DEVICE) == 60.0, what="the audit")
        dom = (await chromium("--dump-dom", relay.metrics_url + "/", profile=tmp_path / "profile")).decode()
        shot = tmp_path / "status.png"
        await chromium(
            f"--screenshot={shot}", "--window-size=1200,500", relay.metrics_url + "/", profile=tmp_path / "p"
        )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rects = [
        (state, datetime.fromisoformat(starts), datetime.fromisoformat(ends), title)
        for state, starts, ends, title in re.findall(
            r'<rect [^>]*data-state="(\w+)" data-from="([^"]+)" data-to="([^"]+)"><title>([^<]*)</title>', dom
        )
    ]
    assert rects, dom[:3000]

    def state_at(moment: datetime) -> str:
        return str(next(s for s, a, b, _ in rects if a <= moment < b))

    assert state_at(start + timedelta(seconds=30)) == "device"
    assert state_at(start + timedelta(seconds=90)) == "missing"  # deleted behind the relay's back
    assert state_at(start + timedelta(seconds=150)) == "device"
    assert state_at(start + timedelta(minutes=5)) == "none"
    assert state_at(recent + timedelta(seconds=30)) == "unaudited"  # after the audit's window
    [(_, a, b, title)] = [r for r in rects if r[0] == "missing"]
    assert title.startswith(f"{a:%H:%M} - {b:%H:%M} missing")  # the times on hover
    assert 'id="legend"' in dom


async def test_coverage_says_what_is_wrong_with_its_arguments(tmp_path: Path, tls: TLS, bucket: str) -> None:
    raw = raw_config(tmp_path, tls, "https://127.0.0.1:1", bucket)
    config_file = write_config(tmp_path / "relay.toml", raw)
    for args, said in (
        (["--day", "2026-13-01"], "--day '2026-13-01': give a UTC day as YYYY-MM-DD"),
        (["--day", "2999-01-01"], "--day 2999-01-01: that day has not begun yet (UTC)"),
        (["--day", "2026-12-01", "--from", "2h"], "give --day, or --from and --to, not both"),
        (["--from", "1h", "--to", "2h"], "must be after --from"),
        (["--camera", "nope"], "--camera 'nope': no such device in [devices] (known: cam-entrance)"),
    ):
        code, _, err = await axis_relay("coverage", "--config", str(config_file), *args)
        assert (code, said in err) == (2, True), (args, err)
