"""A clip posted by a device ends up in S3, byte-identical and checksummed."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import crc32c

from relay.dev.local_s3 import LocalS3
from tests.support.harness import (
    DEVICE,
    PATH,
    TLS,
    RunningRelay,
    clip_name,
    has_object,
    list_keys,
    object_bytes,
    relay_config,
    running_relay,
    wait_until,
)


def crc(data: bytes) -> str:
    return base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()


async def delivered(s3: Any, bucket: str, count: int = 1) -> list[str]:
    async def enough() -> bool:
        return len(await list_keys(s3, bucket)) >= count

    await wait_until(enough, what=f"{count} object(s) in S3")
    return await list_keys(s3, bucket)


async def test_fixed_length_clip_arrives_byte_identical(relay: RunningRelay, s3: Any, bucket: str) -> None:
    clip = os.urandom(300_000)
    answer = await relay.device.post_clip(PATH, clip)
    assert answer.status == 200, answer.body
    [key] = await delivered(s3, bucket)
    assert key.startswith(f"{DEVICE}/")
    assert clip_name(key) == "video23-04-13_21-50-27-63_00001.mkv"
    assert await object_bytes(s3, bucket, key) == clip
    head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == crc(clip)
    assert head["ContentType"] == "video/x-matroska"
    assert head["Metadata"]["camera"] == DEVICE
    await wait_until(lambda: relay.queued() == [], what="spool queue to empty")


async def test_chunked_clip_at_real_time_pace(relay: RunningRelay, s3: Any, bucket: str) -> None:
    clip = os.urandom(400_000)
    answer = await relay.device.post_clip(PATH, clip, chunked=True, pieces=20, pace_s=0.02)
    assert answer.status == 200, answer.body
    [key] = await delivered(s3, bucket)
    assert await object_bytes(s3, bucket, key) == clip


async def test_clip_above_threshold_goes_multipart(relay: RunningRelay, s3: Any, bucket: str) -> None:
    clip = os.urandom(12 * 1024 * 1024 + 12345)  # three 5 MiB parts, the last one short
    answer = await relay.device.post_clip(PATH, clip, chunked=True, pieces=50)
    assert answer.status == 200, answer.body
    [key] = await delivered(s3, bucket)
    assert await object_bytes(s3, bucket, key) == clip
    head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == crc(clip)


async def test_test_button_get_and_head_answer_200(relay: RunningRelay, bucket: str, s3: Any) -> None:
    assert (await relay.device.request("GET", PATH)).status == 200
    assert (await relay.device.request("HEAD", PATH)).status == 200
    assert relay.queued() == []
    assert await list_keys(s3, bucket) == []


async def test_put_and_multipart_form_are_accepted(relay: RunningRelay, s3: Any, bucket: str) -> None:
    clip_a, clip_b = os.urandom(50_000), os.urandom(60_000)
    answer = await relay.device.request(
        "PUT",
        PATH,
        body=clip_a,
        headers={"Content-Type": "video/x-matroska", "Content-Disposition": 'attachment; filename="put.mkv"'},
    )
    assert answer.status == 200, answer.body
    boundary = "xYzZY"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="subfolder"\r\n\r\nlobby\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="form.mkv"\r\n'
            f"Content-Type: video/x-matroska\r\n\r\n"
        ).encode()
        + clip_b
        + f"\r\n--{boundary}--\r\n".encode()
    )
    answer = await relay.device.request(
        "POST", PATH, body=form, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert answer.status == 200, answer.body
    keys = await delivered(s3, bucket, 2)
    by_name = {clip_name(k): k for k in keys}
    assert await object_bytes(s3, bucket, by_name["put.mkv"]) == clip_a
    assert await object_bytes(s3, bucket, by_name["form.mkv"]) == clip_b


async def test_missing_content_disposition_gets_a_timestamped_name(relay: RunningRelay, s3: Any, bucket: str) -> None:
    answer = await relay.device.post_clip(PATH, b"x" * 1000, filename=None)
    assert answer.status == 200
    [key] = await delivered(s3, bucket)
    name = clip_name(key)
    assert name.startswith(f"{DEVICE}_")
    assert name.endswith(".mkv")


async def test_traversal_file_name_is_made_safe(relay: RunningRelay, s3: Any, bucket: str) -> None:
    answer = await relay.device.post_clip(PATH, b"y" * 1000, filename="../../../etc/evil.mkv")
    assert answer.status == 200
    [key] = await delivered(s3, bucket)
    assert ".." not in key
    assert clip_name(key) == "evil.mkv"
    assert not (relay.spool.parent / "etc").exists()


async def test_basic_auth_is_accepted(relay: RunningRelay, s3: Any, bucket: str) -> None:
    auth = base64.b64encode(b"root:pass-word").decode()
    answer = await relay.device.post_clip(
        f"/upload/{DEVICE}", b"z" * 100, extra_headers={"Authorization": f"Basic {auth}"}
    )
    assert answer.status == 200
    await delivered(s3, bucket)


async def test_existing_key_with_other_content_is_never_overwritten(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    # Keys made of the file name alone (the default's times would keep these apart).
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket, s3={"key_template": "{camera}/{filename}"})
    async with running_relay(config, tls) as relay:
        await _never_overwritten(relay, s3, bucket)


async def _never_overwritten(relay: RunningRelay, s3: Any, bucket: str) -> None:
    clip = os.urandom(10_000)
    first = await relay.device.post_clip(PATH, clip, filename="same.mkv")
    assert first.status == 200
    [key] = await delivered(s3, bucket)
    # The device's sequence number wrapped: same name, different footage.
    other = os.urandom(10_000)
    assert (await relay.device.post_clip(PATH, other, filename="same.mkv")).status == 200
    keys = await delivered(s3, bucket, 2)
    assert await object_bytes(s3, bucket, key) == clip
    [second] = [k for k in keys if k != key]
    assert await object_bytes(s3, bucket, second) == other
    assert "~" in second
    # The very same bytes again: recognised, not stored a third time.
    assert (await relay.device.post_clip(PATH, clip, filename="same.mkv")).status == 200
    await wait_until(lambda: not relay.queued(), what="queue to drain")
    assert len(await list_keys(s3, bucket)) == 2
    assert await has_object(s3, bucket, key)


async def test_a_file_name_in_another_script_reaches_s3_readable(relay: RunningRelay, s3: Any, bucket: str) -> None:
    clip = os.urandom(20_000)
    assert (await relay.device.post_clip(PATH, clip, filename="вход-камера.mkv")).status == 200
    [key] = await delivered(s3, bucket, 1)
    assert clip_name(key) == "вход-камера.mkv"
    assert await object_bytes(s3, bucket, key) == clip
