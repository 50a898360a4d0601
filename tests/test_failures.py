"""S3 failures: transient ones are waited out (a refused key or bucket: tests/test_health.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import structlog

from relay.dev.local_s3 import LocalS3
from tests.support.harness import (
    PATH,
    TLS,
    list_keys,
    object_bytes,
    relay_config,
    running_relay,
    s3_client,
    wait_until,
)


async def cli(*args: str) -> tuple[int, str]:
    """Run the axis-relay CLI without blocking the loop the relay under test runs on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode()


async def test_s3_down_then_up_delivers_everything(tmp_path: Path, tls: TLS) -> None:
    server = LocalS3(data_dir=tmp_path / "s3", tls_cert=tls.cert_file, tls_key=tls.key_file)
    await server.start()
    try:
        async with s3_client(server.endpoint_url, tls) as s3:
            await s3.create_bucket(Bucket="outage")
        server.stop()  # the WAN goes down
        # One worker: the order clips go up in is the queue's, oldest first.
        config = relay_config(tmp_path, tls, server.endpoint_url, "outage", s3={"workers": 1})
        clips = [os.urandom(30_000 + i) for i in range(3)]
        with structlog.testing.capture_logs() as logs:
            async with running_relay(config, tls) as relay:
                for n, clip in enumerate(clips):
                    # Devices are answered at LAN speed while S3 is unreachable.
                    answer = await relay.device.post_clip(PATH, clip, filename=f"clip{n}.mkv")
                    assert answer.status == 200
                await wait_until(
                    lambda: relay.stats.upload_retries >= 3, what="the relay to retry against the dead endpoint"
                )
                assert len(relay.queued()) == 3
                assert relay.quarantined() == []
                await server.start()  # the WAN comes back
                await wait_until(lambda: relay.stats.clips_uploaded == 3, timeout=60, what="3 uploads")
                await wait_until(lambda: not relay.queued(), what="the queue to drain")
                stats = await relay.stop()
        uploaded = [e["key"].rsplit("/", 1)[1] for e in logs if e["event"] == "clip_uploaded"]
        assert uploaded == ["clip0.mkv", "clip1.mkv", "clip2.mkv"]  # in the order they arrived
        assert stats.clips_uploaded == 3
        assert stats.upload_retries >= 3
        async with s3_client(server.endpoint_url, tls) as s3:
            keys = await list_keys(s3, "outage")
            assert [k.rsplit("/", 1)[1] for k in keys] == ["clip0.mkv", "clip1.mkv", "clip2.mkv"]
            for key, clip in zip(keys, clips, strict=True):
                assert await object_bytes(s3, "outage", key) == clip
    finally:
        server.stop()
