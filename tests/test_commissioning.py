"""What an installer sees while commissioning a site: real TLS clients fail their
handshakes in each way a camera can (curl that does not trust the relay's CA, TLS 1.0,
plain HTTP, garbage, silence), and the metric, the log and /healthz name the cause, the
camera and the fix; a flood of failures writes a handful of lines; a Test press is
logged; the certificate's end and a ledger that cannot be written show in health."""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import shutil
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
import trustme

from relay.config import parse_config
from relay.dev.local_s3 import LocalS3
from tests.support.backfill import backfill_config, camera_section
from tests.support.harness import (
    DEVICE,
    PATH,
    TLS,
    TOKEN,
    http_get,
    metric,
    relay_config,
    running_relay,
    status_exit,
    wait_until,
)
from tests.support.vapix_camera import CameraEmulator


async def curl(*args: str) -> int:
    curl = shutil.which("curl")
    assert curl, "curl is missing"
    proc = await asyncio.create_subprocess_exec(
        curl, "-sS", "--max-time", "10", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await proc.wait()


async def raw_bytes(port: int, data: bytes) -> None:
    """A client that is not TLS at all: it sends ``data`` and waits for the relay to hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    await asyncio.wait_for(reader.read(), 15)
    writer.close()


async def failures(base: str, reason: str, device: str = "") -> float:
    _, text = await http_get(base + "/metrics")
    name = f'axis_relay_tls_handshake_failures_total{{device="{device}",reason="{reason}"}}'
    return metric(text, name) if name in text else 0.0


async def healthz(base: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((await http_get(base + "/healthz"))[1])
    return report


def pinned(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str, **sections: Any) -> Any:
    """The relay with the test's own address (127.0.0.1) configured as the camera's."""
    devices = {DEVICE: {"token": TOKEN, "address": "127.0.0.1"}}
    return relay_config(
        tmp_path, tls, s3_server.endpoint_url, bucket, devices=devices, ingest={"head_timeout_s": 1}, **sections
    )


async def test_each_failed_handshake_is_counted_logged_and_pinned_on_the_camera(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    config = pinned(tmp_path, tls, s3_server, bucket)
    with structlog.testing.capture_logs() as logs:
        async with running_relay(config, tls) as relay:
            base, port = relay.metrics_url, relay.port
            url = f"https://127.0.0.1:{port}{PATH}"
            assert await curl(url) == 60  # curl does not trust the relay's CA: exit 60, as a camera would refuse
            await wait_until(lambda: bool(relay.stats.tls_trouble), what="the failure pinned on the camera")
            assert await failures(base, "unknown_ca", DEVICE) == 1
            report = await healthz(base)
            assert report["status"] == "degraded"
            [reason] = report["reasons"]
            assert reason["code"] == "tls_handshake_failing"
            assert reason["camera"] == DEVICE
            assert "does not trust the relay's certificate" in reason["message"]
            assert "install the relay's CA" in reason["fix"]
            code, out = await status_exit(relay, tmp_path)
            assert code == 1
            assert "tls_handshake_failing [cam-entrance]" in out

            assert await curl("--tlsv1.0", "--tls-max", "1.0", "-k", url) != 0
            assert await curl(f"http://127.0.0.1:{port}{PATH}") != 0
            await raw_bytes(port, b"\x00\x01garbage that is not TLS\r\n" * 4)
            await raw_bytes(port, b"")  # says nothing: the handshake deadline (1 s) ends it
            for reason_code in ("protocol_version", "plain_http", "not_tls", "timeout"):

                async def counted(code: str = reason_code) -> bool:
                    return await failures(base, code, DEVICE) == 1

                await wait_until(counted, what=f"a {reason_code} failure counted")
            page = (await http_get(base + "/"))[1]
            assert "does not finish its TLS handshake" in page or "fails its TLS handshake" in page or DEVICE in page
            # A camera that then trusts the relay and logs in clears it; the Test press is logged.
            answer = await relay.device.request("GET", PATH)
            assert answer.status == 200
            assert relay.stats.tls_trouble == {}
            assert (await healthz(base))["status"] == "ok"
            assert (await status_exit(relay, tmp_path))[0] == 0
            await relay.device.request("GET", "/wp-login.php")
            _, text = await http_get(base + "/metrics")
            assert metric(text, "axis_relay_ingest_unknown_paths_total") == 1
    failed = [e for e in logs if e["event"] == "tls_handshake_failed"]
    # One line for the first failure from the address; the rest wait for the 5-minute summary.
    assert len(failed) == 1
    assert failed[0]["reason"] == "unknown_ca"
    assert failed[0]["camera"] == DEVICE
    assert failed[0]["log_level"] == "warning"
    assert "install the relay's CA" in failed[0]["fix"]
    [test_ok] = [e for e in logs if e["event"] == "device_test_ok"]
    assert test_ok["camera"] == DEVICE
    assert test_ok["log_level"] == "info"
    assert [e for e in logs if e["event"] == "tls_handshake_recovered"]
    [unknown] = [e for e in logs if e["event"] == "ingest_unknown_path"]
    assert unknown["log_level"] == "debug"
    assert unknown["path"] == "/wp-login.php"


async def test_a_flood_of_failed_handshakes_counts_every_one_and_writes_a_handful_of_lines(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    flood = 1000
    with structlog.testing.capture_logs() as logs:
        async with running_relay(config, tls) as relay:
            port = relay.port

            def garbage() -> None:
                for _ in range(flood):
                    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
                        s.recv(100)  # the relay's alert, or its hang-up

            await asyncio.to_thread(garbage)

            async def all_counted() -> bool:
                return await failures(relay.metrics_url, "plain_http") == flood

            await wait_until(all_counted, timeout=60, what=f"{flood} failures counted")
            # An untrusted source, not a camera: health is not about strangers.
            assert (await healthz(relay.metrics_url))["status"] == "ok"
            # Devices still get in.
            assert (await relay.device.post_clip(PATH, b"x" * 1000)).status == 200
    lines = [e for e in logs if e["event"].startswith("tls_handshake")]
    assert 1 <= len(lines) <= 3, lines[:5]


def _cert_ending_in(tls_dir: Path, days: float) -> tuple[Path, Path]:
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    leaf = ca.issue_cert(
        "127.0.0.1", not_before=now - datetime.timedelta(days=60), not_after=now + datetime.timedelta(days=days)
    )
    cert, key = tls_dir / f"cert-{days}.pem", tls_dir / f"key-{days}.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


async def test_a_certificate_near_its_end_is_degraded_and_an_expired_one_failing(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    for days, level, code in ((10, "degraded", "cert_expiring"), (-1, "failing", "cert_expired")):
        cert, key = _cert_ending_in(tmp_path, days)
        config = relay_config(
            tmp_path, tls, s3_server.endpoint_url, bucket, ingest={"tls_cert": str(cert), "tls_key": str(key)}
        )
        async with running_relay(config, tls) as relay:
            status, body = await http_get(relay.metrics_url + "/healthz")
            report = json.loads(body)
            assert report["status"] == level, report
            assert [r["code"] for r in report["reasons"]] == [code]
            assert "renew" in report["reasons"][0]["fix"]
            assert status == (503 if level == "failing" else 200)
            assert (await status_exit(relay, tmp_path))[0] == (2 if level == "failing" else 1)


async def test_a_ledger_that_cannot_be_written_is_degraded_and_clips_still_flow(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the ledger's directory should be")
    config = relay_config(
        tmp_path, tls, s3_server.endpoint_url, bucket, ledger={"path": str(blocker / "ledger.sqlite3")}
    )
    async with running_relay(config, tls) as relay:
        report = await healthz(relay.metrics_url)
        assert report["status"] == "degraded"
        [reason] = report["reasons"]
        assert reason["code"] == "ledger_unwritable"
        assert (await status_exit(relay, tmp_path))[0] == 1
        assert (await relay.device.post_clip(PATH, b"x" * 1000)).status == 200
        await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the clip delivered all the same")


async def test_a_camera_that_goes_quiet_is_degraded_by_name_until_its_next_clip(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    """A continuous camera whose schedule says a clip every second, with 1 s of grace."""
    cam = CameraEmulator(DEVICE)
    async with cam.serving(tls.server_context()):
        section = camera_section(cam, tls, cadence_s=1.0, grace_s=1.0)
        raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, section, backfill={"enabled": False})
        async with running_relay(parse_config(raw, environ={}), tls) as relay:
            base = relay.metrics_url
            assert (await relay.device.post_clip(PATH, b"x" * 1000)).status == 200
            sent = time.monotonic()

            async def silent() -> bool:
                return "camera_silent" in [r["code"] for r in (await healthz(base))["reasons"]]

            await wait_until(silent, what="the silence to show")
            fell = time.monotonic()
            report = await healthz(base)
            assert report["status"] == "degraded"
            [reason] = report["reasons"]
            assert reason["camera"] == DEVICE
            assert DEVICE in reason["message"]
            assert f"axis-relay camera check {DEVICE}" in reason["fix"]
            assert (await status_exit(relay, tmp_path))[0] == 1
            assert (await relay.device.post_clip(PATH, b"x" * 1000)).status == 200
            assert (await healthz(base))["status"] == "ok"  # at once: the clip is the proof
    print(
        f"\ncamera silent: last clip -> degraded in {fell - sent:.2f} s (cadence 1 s + grace 1 s); clip -> ok at once"
    )


async def test_a_camera_clock_off_and_an_unfillable_gap_are_degraded_by_name(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    cam = CameraEmulator(DEVICE, clock_offset_s=5.0, disk_status=None)  # 5 s fast, and no SD card
    async with cam.serving(tls.server_context()):
        raw = backfill_config(tmp_path, tls, s3_server.endpoint_url, bucket, camera_section(cam, tls))
        async with running_relay(parse_config(raw, environ={}), tls) as relay:
            base = relay.metrics_url
            started = time.monotonic()

            async def reasons() -> set[str]:
                return {r["code"] for r in (await healthz(base))["reasons"]}

            await wait_until(lambda: _has(reasons(), "camera_clock"), what="the clock to show")
            clock_at = time.monotonic()
            # Clips 1 and 3 arrive, 2 never does; the card is gone, so it cannot be fetched.
            start = cam.now() - timedelta(seconds=20)
            await cam.run_schedule(relay.device, PATH, start, 3, 5.0, drop={2})
            await wait_until(lambda: _has(reasons(), "gaps_open"), what="the unfillable gap to show")
            report = await healthz(base)
            assert report["status"] == "degraded"
            by_code = {r["code"]: r for r in report["reasons"]}
            assert by_code["camera_clock"]["camera"] == DEVICE
            # Measured from the camera's Date header, whole seconds: about +5 s.
            assert re.search(r"is \+[456]\.\d s off the relay's", by_code["camera_clock"]["message"])
            assert "unfillable" in by_code["gaps_open"]["message"]
            assert f"axis-relay gaps --camera {DEVICE}" in by_code["gaps_open"]["fix"]
            assert (await status_exit(relay, tmp_path))[0] == 1
            cam.clock_offset_s = 0.0  # NTP set on the camera

            async def clock_fixed() -> bool:
                return "camera_clock" not in await reasons()

            fixed = time.monotonic()
            await wait_until(clock_fixed, what="the clock reason to go")
            back = time.monotonic()
    print(f"\ncamera clock 5 s off: start -> degraded {clock_at - started:.2f} s; fixed -> gone {back - fixed:.2f} s")


async def _has(reasons: Any, code: str) -> bool:
    return code in await reasons
