"""SIGKILL the relay process at the moments that matter; restart; count what S3 holds.

Every clip that got a 200 is in S3 exactly once, byte-identical; nothing that did not
get a 200 is uploaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from relay.dev.local_s3 import LocalS3, free_port
from tests.support.faultproxy import Faults, in_front_of
from tests.support.harness import PATH, TLS, clip_name, list_keys, object_bytes, raw_config, wait_until, write_config
from tests.support.relay_process import relay_process


async def test_kill_mid_body_uploads_nothing_partial(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    spool = Path(raw["spool"]["dir"])
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
        _reader, writer = await relay.device.start_clip(PATH, os.urandom(2_000_000), total_length=8_000_000)
        await wait_until(
            lambda: any(p.stat().st_size > 0 for p in (spool / "incoming").glob("*/data")),
            what="part of the body on disk",
        )
        await relay.kill()
        writer.close()
        await relay.start()
        assert relay.named("spool_partial_removed")[0]["count"] == 1
        assert list((spool / "incoming").iterdir()) == []
        assert list((spool / "queue").iterdir()) == []  # so nothing can be uploaded
        assert await list_keys(s3, bucket) == []


async def test_kill_while_queued_uploads_each_clip_once(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    # First life: S3 unreachable (nothing listens there), so clips wait in the queue.
    dead = f"https://127.0.0.1:{free_port()}"
    raw = raw_config(tmp_path, tls, dead, bucket)
    clips = {f"q{n}.mkv": os.urandom(40_000 + n) for n in range(4)}
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
        for name, clip in clips.items():
            assert (await relay.device.post_clip(PATH, clip, filename=name)).status == 200
        await relay.wait_for("upload_retry")
        await relay.kill()
        # Second life: S3 is back.
        raw["s3"]["endpoint_url"] = s3_server.endpoint_url
        write_config(tmp_path / "relay.toml", raw)
        await relay.start()
        assert relay.named("spool_recovered")[0]["queued"] == 4

        async def all_there() -> bool:
            return len(await list_keys(s3, bucket)) >= 4

        await wait_until(all_there, what="4 objects")
        await wait_until(lambda: not list((Path(raw["spool"]["dir"]) / "queue").iterdir()), what="empty queue")
        keys = await list_keys(s3, bucket)
        assert sorted(clip_name(k) for k in keys) == sorted(clips)
        for key in keys:
            assert await object_bytes(s3, bucket, key) == clips[clip_name(key)]


async def test_kill_mid_multipart_resumes_without_resending_parts(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    clip = os.urandom(25 * 1024 * 1024 + 777)  # six 5 MiB parts
    async with in_front_of(s3_server.endpoint_url, Faults(bytes_per_s=8 * 1024 * 1024)) as slow:
        raw = raw_config(tmp_path, tls, slow.endpoint_url, bucket)
        queue = Path(raw["spool"]["dir"]) / "queue"
        async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
            assert (await relay.device.post_clip(PATH, clip, chunked=True, pieces=40)).status == 200

            def parts_done() -> int:
                states = list(queue.glob("*/upload.json"))
                return len(json.loads(states[0].read_text())["parts"]) if states else 0

            await wait_until(lambda: parts_done() >= 2, timeout=60, what="two parts uploaded")
            await relay.kill()
            assert parts_done() < 6
            raw["s3"]["endpoint_url"] = s3_server.endpoint_url
            write_config(tmp_path / "relay.toml", raw)
            await relay.start()
            resumed = await relay.wait_for("multipart_resumed")
            assert resumed["parts_kept"] >= 2
            await relay.wait_for("clip_uploaded", timeout=60)
    [key] = await list_keys(s3, bucket)
    assert await object_bytes(s3, bucket, key) == clip
    assert not relay.named("multipart_started")  # the second life started nothing new
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads")
