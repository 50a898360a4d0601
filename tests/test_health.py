"""/metrics follows the clips, /healthz turns unhealthy when uploads stall, `status` prints it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from relay.dev.local_s3 import LocalS3, free_port
from tests.support.harness import (
    DEVICE,
    PATH,
    TLS,
    http_get,
    metric,
    raw_config,
    relay_config,
    running_relay,
    wait_until,
    write_config,
)


async def test_metrics_change_as_clips_flow(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    async with running_relay(config, tls) as relay:
        base = relay.metrics_url
        status, before = await http_get(base + "/metrics")
        assert status == 200
        assert metric(before, "axis_relay_clips_accepted_total") == 0
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
        status, body = await http_get(base + "/healthz")
        assert status == 200, body


async def test_healthz_turns_unhealthy_when_uploads_stall_and_status_says_so(tmp_path: Path, tls: TLS) -> None:
    dead = "https://127.0.0.1:1"  # S3 unreachable
    # A fixed port: `axis-relay status` finds the relay through the config file.
    raw = raw_config(tmp_path, tls, dead, "clips", metrics={"port": free_port(), "upload_stall_s": 0.5})
    config_file = write_config(tmp_path / "relay.toml", raw)
    base = f"http://127.0.0.1:{raw['metrics']['port']}"
    from relay.config import parse_config

    async with running_relay(parse_config(raw, environ={}), tls) as relay:
        assert (await http_get(base + "/healthz"))[0] == 200
        assert (await relay.device.post_clip(PATH, os.urandom(1000))).status == 200

        async def unhealthy() -> bool:
            return (await http_get(base + "/healthz"))[0] == 503

        await wait_until(unhealthy, what="/healthz to report the stall")
        _, body = await http_get(base + "/healthz")
        assert "nothing was uploaded" in body
        _, text = await http_get(base + "/metrics")
        assert metric(text, "axis_relay_spool_clips") == 1
        assert metric(text, "axis_relay_oldest_pending_age_seconds") > 0
        assert 'axis_relay_upload_retries_total{reason="EndpointConnectionError"}' in text
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay", "status", "--config", str(config_file), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 1
        table = out.decode()
        assert "UNHEALTHY" in table
        assert "queued clips" in table
    assert relay.task.done()


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
