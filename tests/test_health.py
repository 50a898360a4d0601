"""What the relay says about delivery is true: each fault is made for real (a wrong key,
a missing bucket, a dead S3, a damaged clip) and /healthz, `axis-relay status` and
/metrics are read while it lasts and after it is fixed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from relay.config import parse_config
from relay.dev.local_s3 import LocalS3, free_port
from tests.support.faultproxy import Faults, in_front_of
from tests.support.harness import (
    DEVICE,
    PATH,
    TLS,
    RunningRelay,
    axis_relay,
    clip_name,
    healthz,
    http_get,
    list_keys,
    metric,
    object_bytes,
    raw_config,
    relay_config,
    running_relay,
    s3_client,
    status_exit,
    wait_until,
    write_config,
)


async def status_cli(config_file: Path) -> tuple[int, str]:
    """`axis-relay status` in a process of its own, as cron or a monitoring agent runs it."""
    code, out, _ = await axis_relay("status", "--config", str(config_file))
    return code, out


def codes(report: dict[str, Any]) -> list[str]:
    return [r["code"] for r in report["reasons"]]


async def until_level(base: str, level: str, what: str, timeout: float = 30.0) -> float:
    """Wait for /healthz to say ``level``; returns when it did (time.monotonic())."""

    async def said() -> bool:
        return bool((await healthz(base))[1]["status"] == level)

    await wait_until(said, timeout=timeout, what=what)
    return time.monotonic()


async def test_metrics_change_as_clips_flow(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    async with running_relay(config, tls) as relay:
        base = relay.metrics_url
        status, before = await http_get(base + "/metrics")
        assert status == 200
        assert metric(before, "axis_relay_clips_accepted_total") == 0
        assert 'axis_relay_build_info{aiohttp="' in before
        assert metric(before, 'axis_relay_health{status="ok"}') == 1
        assert (await relay.device.post_clip(PATH, os.urandom(30_000))).status == 200
        assert (await relay.device.post_clip("/upload/nope?accessToken=x", b"x")).status == 404

        async def uploaded_and_forgotten() -> bool:
            # Counted when S3 confirms, just before the spool lets the clip go.
            _, text = await http_get(base + "/metrics")
            return metric(text, "axis_relay_clips_uploaded_total") == 1 and metric(text, "axis_relay_spool_clips") == 0

        await wait_until(uploaded_and_forgotten, what="the upload to leave the spool")
        _, after = await http_get(base + "/metrics")
        assert metric(after, "axis_relay_clips_accepted_total") == 1
        assert metric(after, "axis_relay_bytes_uploaded_total") == 30_000
        assert metric(after, "axis_relay_clips_rejected_total") == 1
        assert metric(after, "axis_relay_spool_clips") == 0
        assert metric(after, "axis_relay_upload_seconds_count") == 1
        assert metric(after, 'axis_relay_clips_uploaded_by_route_total{route="s3"}') == 1
        assert metric(after, "axis_relay_last_upload_timestamp_seconds") > 0
        assert f'axis_relay_device_last_clip_timestamp_seconds{{device="{DEVICE}"}}' in after
        status, report = await healthz(base)
        assert status == 200, report
        assert report["status"] == "ok"
        assert report["reasons"] == []
        assert report["healthy"] is True


async def test_a_wrong_secret_key_is_failing_at_once_quarantines_nothing_and_a_restart_delivers_all(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, s3: Any
) -> None:
    port = free_port()
    wrong = raw_config(
        tmp_path,
        tls,
        s3_server.endpoint_url,
        bucket,
        s3={"secret_access_key": "not-the-secret"},
        metrics={"port": port},
    )
    config_file = write_config(tmp_path / "relay.toml", wrong)
    base = f"http://127.0.0.1:{port}"
    clips = [os.urandom(20_000 + n) for n in range(3)]
    async with running_relay(parse_config(wrong, environ={}), tls) as relay:
        assert (await healthz(base))[1]["status"] == "ok"
        sent = time.monotonic()
        assert (await relay.device.post_clip(PATH, clips[0], filename="c0.mkv")).status == 200
        fell = await until_level(base, "failing", "/healthz to say failing")
        # Within one attempt: no retry came before the verdict.
        assert relay.stats.upload_retries == 0
        for n in (1, 2):
            assert (await relay.device.post_clip(PATH, clips[n], filename=f"c{n}.mkv")).status == 200
        status, report = await healthz(base)
        assert status == 503
        [reason] = report["reasons"]
        assert reason["code"] == "destination_refused"
        assert "SignatureDoesNotMatch" in reason["message"] or "InvalidAccessKeyId" in reason["message"]
        assert "secret" in reason["fix"] or "access key" in reason["fix"]
        assert reason["since"]
        assert report["healthy"] is False
        assert report["problems"] == [reason["message"]]
        code, out = await status_cli(config_file)
        assert code == 2, out
        assert "FAILING" in out
        assert "destination_refused" in out
        assert "fix:" in out
        _, text = await http_get(base + "/metrics")
        assert metric(text, 'axis_relay_health{status="failing"}') == 1
        assert metric(text, 'axis_relay_health_reasons{code="destination_refused",level="failing"}') == 1
        # Paused, not quarantined: every clip waits, whole.
        assert relay.quarantined() == []
        assert len(relay.queued()) == 3
        assert relay.stats.clips_quarantined == 0
    print(f"\nwrong secret: clip sent -> failing in {fell - sent:.2f} s")

    right = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket, metrics={"port": port})
    write_config(config_file, right)
    restarted = time.monotonic()
    async with running_relay(parse_config(right, environ={}), tls) as relay:
        await wait_until(lambda: relay.stats.clips_uploaded == 3, what="every waiting clip delivered")
        back = await until_level(base, "ok", "/healthz to say ok again")
        assert (await status_cli(config_file))[0] == 0
    print(f"wrong secret fixed: restart -> ok in {back - restarted:.2f} s")
    keys = await list_keys(s3, bucket)
    assert [clip_name(k) for k in keys] == ["c0.mkv", "c1.mkv", "c2.mkv"]
    for key, clip in zip(keys, clips, strict=True):
        assert await object_bytes(s3, bucket, key) == clip


async def test_a_missing_bucket_pauses_delivery_and_sighup_resumes_it_without_spool_retry(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any
) -> None:
    bucket = f"not-yet-{os.urandom(4).hex()}"
    # retry.max_s is long: only the reload (SIGHUP) can make the relay try again in time.
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket, retry={"initial_s": 0.05, "max_s": 600})
    reload = asyncio.Event()
    clip = os.urandom(20_000)
    async with running_relay(config, tls, reload=reload) as relay:
        base = relay.metrics_url
        assert (await relay.device.post_clip(PATH, clip)).status == 200
        await until_level(base, "failing", "the missing bucket to show")
        _, report = await healthz(base)
        [reason] = report["reasons"]
        assert reason["code"] == "destination_refused"
        assert "NoSuchBucket" in reason["message"]
        assert "create the bucket" in reason["fix"]
        assert relay.quarantined() == []
        assert len(relay.queued()) == 1

        await s3.create_bucket(Bucket=bucket)
        fixed = time.monotonic()
        reload.set()  # what SIGHUP does (systemctl reload axis-relay)
        await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the waiting clip delivered")
        back = await until_level(base, "ok", "/healthz to say ok")
        print(f"\nmissing bucket created + SIGHUP -> ok in {back - fixed:.2f} s")
    [key] = await list_keys(s3, bucket)
    assert await object_bytes(s3, bucket, key) == clip


async def test_a_dead_s3_is_failing_after_upload_failing_after_s_and_everything_arrives_in_order_after(
    tmp_path: Path, tls: TLS
) -> None:
    """The WAN goes down with clips arriving: devices are answered at LAN speed, health
    says failing after health.upload_failing_after_s (not at the first failure), and when
    S3 answers again every clip goes up, byte-identical, in the order it arrived (one
    worker), and health is ok again by itself."""
    server = LocalS3(data_dir=tmp_path / "s3", tls_cert=tls.cert_file, tls_key=tls.key_file)
    await server.start()
    try:
        async with s3_client(server.endpoint_url, tls) as s3:
            await s3.create_bucket(Bucket="outage")
        server.stop()  # the WAN goes down
        port = free_port()
        raw = raw_config(
            tmp_path,
            tls,
            server.endpoint_url,
            "outage",
            metrics={"port": port},
            health={"upload_failing_after_s": 1},
            s3={"workers": 1},  # the order clips go up in is the queue's, oldest first
        )
        config_file = write_config(tmp_path / "relay.toml", raw)
        clips = [os.urandom(30_000 + n) for n in range(3)]
        with structlog.testing.capture_logs() as logs:
            async with running_relay(parse_config(raw, environ={}), tls) as relay:
                base = relay.metrics_url
                for n, clip in enumerate(clips):
                    assert (await relay.device.post_clip(PATH, clip, filename=f"clip{n}.mkv")).status == 200
                await wait_until(lambda: relay.stats.upload_retries >= 1, what="a failed attempt")
                sent = time.monotonic()
                # Not at the first failure: a passing blip is not worth an alarm.
                assert (await healthz(base))[1]["status"] == "ok"
                await until_level(base, "failing", "the outage to show")
                fell = time.monotonic()
                status, report = await healthz(base)
                assert status == 503
                assert codes(report) == ["uploads_failing"]
                assert "EndpointConnectionError" in report["reasons"][0]["message"]
                code, out = await status_cli(config_file)
                assert code == 2
                assert "uploads_failing" in out
                assert len(relay.queued()) == 3
                assert relay.quarantined() == []

                await server.start()  # the WAN comes back
                restored = time.monotonic()
                back = await until_level(base, "ok", "/healthz to say ok again", timeout=60)
                await wait_until(lambda: relay.stats.clips_uploaded == 3, timeout=60, what="3 uploads")
                assert (await status_cli(config_file))[0] == 0
        uploaded = [clip_name(e["key"]) for e in logs if e["event"] == "clip_uploaded"]
        assert uploaded == ["clip0.mkv", "clip1.mkv", "clip2.mkv"]  # in the order they arrived
        async with s3_client(server.endpoint_url, tls) as s3:
            keys = await list_keys(s3, "outage")
            for key, clip in zip(keys, clips, strict=True):  # keys sort by file name here
                assert await object_bytes(s3, "outage", key) == clip
        print(f"\ndead S3: first failed attempt -> failing after {fell - sent:.2f} s (upload_failing_after_s 1)")
        print(f"dead S3 answers again -> ok in {back - restored:.2f} s")
    finally:
        server.stop()


async def test_a_quarantined_clip_is_degraded_until_discarded(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    port = free_port()
    dead = raw_config(tmp_path, tls, f"https://127.0.0.1:{free_port()}", bucket, metrics={"port": port})
    async with running_relay(parse_config(dead, environ={}), tls) as relay:  # the clip waits
        answer = await relay.device.post_clip(PATH, os.urandom(50_000))
        clip_id = json.loads(answer.body)["clip_id"]
    data = tmp_path / "spool" / "queue" / clip_id / "data"
    damaged = bytearray(data.read_bytes())
    damaged[1234] ^= 0x01  # the disk flipped a bit: S3 refuses the checksum
    data.write_bytes(bytes(damaged))
    live = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket, metrics={"port": port})
    config_file = write_config(tmp_path / "relay.toml", live)
    async with running_relay(parse_config(live, environ={}), tls) as relay:
        base = relay.metrics_url
        await until_level(base, "degraded", "the quarantine to show")
        status, report = await healthz(base)
        assert status == 200  # degraded: clips still flow
        [reason] = report["reasons"]
        assert reason["code"] == "clips_quarantined"
        assert "checksum" in reason["message"] or "BadDigest" in reason["message"]
        assert "spool retry" in reason["fix"]
        assert "spool discard" in reason["fix"]
        code, out = await status_cli(config_file)
        assert code == 1
        assert "DEGRADED" in out

        code, _, err = await axis_relay("spool", "discard", "--config", str(config_file))
        assert code == 2
        assert "--all" in err
        assert relay.quarantined() == [clip_id]
        code, out, _ = await axis_relay("spool", "discard", "--all", "--config", str(config_file))
        assert code == 0
        assert f"discarding {clip_id}" in out
        assert "BadDigest" in out
        assert relay.quarantined() == []
        await until_level(base, "ok", "ok once the operator dealt with it")
        assert (await status_cli(config_file))[0] == 0


async def test_status_when_relay_is_down(tmp_path: Path, tls: TLS) -> None:
    raw: dict[str, Any] = raw_config(tmp_path, tls, "https://127.0.0.1:1", "clips", metrics={"port": free_port()})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "status",
        "--config",
        str(write_config(tmp_path / "r.toml", raw)),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 3
    assert b"is the relay running" in err


async def test_version_everywhere(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str) -> None:
    from relay.ops.version import VERSION

    code, out, _ = await axis_relay("--version")
    assert code == 0
    assert out.strip() == f"axis-relay {VERSION}"
    assert VERSION != "unknown"
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    async with running_relay(config, tls) as relay:
        _, text = await http_get(relay.metrics_url + "/metrics")
        assert f'version="{VERSION}"' in text
        assert 'botocore="' in text
        assert 'python="' in text
        _, page = await http_get(relay.metrics_url + "/")
        assert f'<small id="version">{VERSION}</small>' in page
        assert (await healthz(relay.metrics_url))[1]["version"] == VERSION


async def test_a_disk_below_the_floor_is_failing_and_a_crawling_upload_is_stalled(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    """Two more failing reasons, each from its real cause: free disk below
    spool.min_free_bytes (the relay refuses clips), and uploads that neither finish nor
    fail (an uplink at 2 kB/s) past metrics.upload_stall_s."""
    floor = relay_config(tmp_path / "floor", tls, s3_server.endpoint_url, bucket, spool={"min_free_bytes": 10**15})
    async with running_relay(floor, tls) as relay:
        assert (await relay.device.post_clip(PATH, b"x" * 1000)).status == 507
        status, report = await healthz(relay.metrics_url)
        assert status == 503
        assert "disk_low" in codes(report)
        assert (await status_exit(relay, tmp_path))[0] == 2
    async with in_front_of(s3_server.endpoint_url, Faults(bytes_per_s=2000)) as crawling:
        slow = relay_config(
            tmp_path / "slow",
            tls,
            crawling.endpoint_url,
            bucket,
            metrics={"upload_stall_s": 1},
            s3={"read_timeout_s": 60},
        )
        async with running_relay(slow, tls) as relay:
            assert (await relay.device.post_clip(PATH, os.urandom(200_000))).status == 200
            await until_level(relay.metrics_url, "failing", "the stall to show")
            _, report = await healthz(relay.metrics_url)
            assert codes(report) == ["uploads_stalled"]
            assert relay.stats.upload_retries == 0  # nothing failed: it only does not move


async def test_health_reads_the_disk_off_the_event_loop(relay: RunningRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow or hung spool disk must not stall the loop that answers devices: every
    scrape's statvfs, access check and quarantine scan runs in a thread. (The os calls
    are watched, not replaced: each still does its real work.)"""
    loop_thread = threading.get_ident()
    calls: list[tuple[str, bool]] = []
    for name in ("statvfs", "access", "scandir", "listdir"):
        real = getattr(os, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append((_name, threading.get_ident() == loop_thread))
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, spy)
    for path in ("/healthz", "/metrics", "/"):
        status, _ = await http_get(relay.metrics_url + path)
        assert status == 200, path
    assert {"statvfs", "access"} <= {n for n, _ in calls}  # the disk was read...
    assert [n for n, on_loop in calls if on_loop] == []  # ...never on the loop
