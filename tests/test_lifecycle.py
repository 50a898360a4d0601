"""Shutdown is ordered: devices mid-upload finish, the rest stays queued, exit 0."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from relay.dev.local_s3 import LocalS3, free_port
from tests.support.harness import PATH, TLS, TOKEN, raw_config, relay_config, running_relay, wait_until, write_config
from tests.support.relay_process import relay_process


async def test_device_mid_upload_finishes_during_shutdown(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    async with running_relay(config, tls) as relay:
        sending = asyncio.create_task(
            relay.device.post_clip(PATH, os.urandom(200_000), chunked=True, pieces=20, pace_s=0.05)
        )
        await wait_until(lambda: any((relay.spool / "incoming").iterdir()), what="the upload to be in progress")
        relay.stop_event.set()  # SIGTERM arrives while the device is still sending
        answer = await asyncio.wait_for(sending, 30)
        assert answer.status == 200
        stats = await asyncio.wait_for(relay.task, 30)
    assert stats.clips_accepted == 1
    # Accepted before shutdown, so it is either uploaded or still queued: never lost.
    assert stats.clips_uploaded + len(relay.queued()) == 1
    # A new connection is refused once shutdown began.
    try:
        await relay.device.request("GET", PATH)
        raise AssertionError("relay still listening after shutdown")
    except OSError:
        pass


async def test_sigterm_exits_0_with_one_summary_line_and_no_secrets(tmp_path: Path, tls: TLS) -> None:
    dead = f"https://127.0.0.1:{free_port()}"  # uploads keep failing: a clip stays queued
    raw = raw_config(tmp_path, tls, dead, "clips")
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
        device = relay.device
        assert (await device.post_clip(PATH, os.urandom(10_000))).status == 200
        await relay.wait_for("upload_retry")
        assert await relay.stop() == 0
    [summary] = relay.named("relay_stopped")
    assert summary["clips_accepted"] == 1
    assert summary["left_queued"] == 1
    assert summary["clips_uploaded"] == 0
    everything: Any = json.dumps(relay.events)
    assert TOKEN not in everything
    assert raw["s3"]["secret_access_key"] not in everything
    assert len(list((Path(raw["spool"]["dir"]) / "queue").iterdir())) == 1


async def test_slow_headers_are_cut_off_and_bad_requests_logged(tmp_path: Path, tls: TLS) -> None:
    dead = f"https://127.0.0.1:{free_port()}"
    raw = raw_config(tmp_path, tls, dead, "clips", ingest={"idle_timeout_s": 0.5, "max_header_bytes": 2048})
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
        device = relay.device
        # Slowloris: headers that never end. The connection is closed, unanswered.
        reader, writer = await device._open()
        writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        # An oversized header: a 4xx, and a JSON log line naming the source.
        answer = await device.post_clip(PATH, b"x", extra_headers={"X-Pad": "p" * 5000})
        assert 400 <= answer.status < 500
        event = await relay.wait_for("Error handling request from 127.0.0.1")
        assert event["logger"] == "aiohttp.server"
