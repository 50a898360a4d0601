"""One relay per spool: a second `axis-relay run` on a live spool is refused, and the
first one's clips, one arriving at that moment among them, are not touched."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from relay.dev.local_s3 import LocalS3, free_port
from tests.support.harness import (
    PATH,
    TLS,
    axis_relay_command,
    list_keys,
    object_bytes,
    raw_config,
    wait_until,
    write_config,
)
from tests.support.relay_process import relay_process


async def second_relay(config: Path) -> tuple[int | None, str]:
    """`axis-relay run` as a second process: its exit code and stderr (None: still running
    after 30 s, and then killed)."""
    proc = await asyncio.create_subprocess_exec(
        *axis_relay_command("run", "--config", str(config)), stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, "still running"
    return proc.returncode, err.decode()


async def test_a_second_relay_on_a_live_spool_is_refused_and_the_first_loses_nothing(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    first_config = write_config(tmp_path / "first.toml", raw)
    # The same spool, ports of its own: only the spool can stop it.
    raw["ingest"]["port"], raw["metrics"]["port"] = free_port(), free_port()
    second_config = write_config(tmp_path / "second.toml", raw)
    clip = os.urandom(5 * 1024 * 1024)
    async with relay_process(first_config, tls.client_context()) as relay:
        # A device streaming a 5 MB clip slowly: it is in incoming/ while the second starts.
        sending = asyncio.create_task(relay.device.post_clip(PATH, clip, filename="slow.mkv", pieces=50, pace_s=0.05))
        await wait_until(lambda: any((tmp_path / "spool" / "incoming").iterdir()), what="the clip arriving")
        code, err = await second_relay(second_config)
        assert code == 3, err
        assert not sending.done(), "the clip finished before the second relay was tried"
        answer = await sending
        assert relay.pid is not None
        pid = relay.pid
        await wait_until(lambda: len(relay.named("clip_uploaded")) == 1, timeout=60, what="the clip uploaded")
    assert f"is in use by another relay (PID {pid})" in err
    assert answer.status == 200, answer.body
    assert not relay.named("spool_partial_removed")
    [key] = await list_keys(s3, bucket)
    assert await object_bytes(s3, bucket, key) == clip
