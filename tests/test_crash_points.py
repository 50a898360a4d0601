"""The relay dies (SIGKILL) at each step of accepting and uploading a clip; after a
restart, every clip that got a 200 is in S3 exactly once, byte-identical, and nothing
is left behind (no partial objects, no open multipart uploads, an empty spool).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay import crashpoints
from relay.dev.local_s3 import LocalS3
from tests.support.harness import PATH, TLS, list_keys, object_bytes, raw_config, wait_until, write_config
from tests.support.relay_process import relay_process

CLIP_BYTES = 12 * 1024 * 1024 + 4321  # multipart: three 5 MiB parts, crosses the 1 MiB write batches


@pytest.mark.parametrize("point", crashpoints.ALL)
async def test_crash_point(point: str, tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str) -> None:
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    spool = Path(raw["spool"]["dir"])
    clip = os.urandom(CLIP_BYTES)
    config = write_config(tmp_path / "relay.toml", raw)
    async with relay_process(config, tls.client_context(), env={crashpoints.ENV: point}) as relay:
        try:
            answer_status = (await relay.device.post_clip(PATH, clip, filename="crash.mkv")).status
        except (ConnectionError, OSError):
            answer_status = None  # the relay died before answering
        assert await relay.exited() != 0, f"the relay did not reach {point}"
        ingest_point = point.startswith("ingest")
        assert (answer_status is None) == ingest_point

        # Killed while removing a delivered clip: it was reported delivered before.
        reported_before = [e["key"] for e in relay.named("clip_uploaded")]
        relay.restart_env({})
        await relay.start()
        expect_object = not ingest_point or point == crashpoints.INGEST_BEFORE_ANSWER
        if point == crashpoints.UPLOAD_MID_REMOVE:
            assert len(reported_before) == 1
            assert not relay.named("clip_quarantined")
        elif expect_object:
            await relay.wait_for("clip_uploaded", timeout=60)
        if point == crashpoints.UPLOAD_AFTER_CREATE:
            # S3 had answered the create; the restart finds that upload and fills it.
            assert relay.named("multipart_adopted")
            assert not relay.named("multipart_started")
        await wait_until(lambda: not list((spool / "queue").iterdir()), what="an empty queue")

    keys = await list_keys(s3, bucket)
    if expect_object:
        # Durable before the crash, so it is delivered, once. (After the rename but
        # before the answer the device saw an error, yet the clip is kept: a lost
        # answer must never become a lost clip.)
        assert len(keys) == 1
        assert await object_bytes(s3, bucket, keys[0]) == clip
    else:
        assert keys == []
    assert list((spool / "incoming").iterdir()) == []
    assert list((spool / "quarantine").iterdir()) == []
    open_uploads = await s3.list_multipart_uploads(Bucket=bucket)
    assert not open_uploads.get("Uploads"), json.dumps(open_uploads.get("Uploads"), default=str)


async def test_upload_that_s3_forgot_starts_over_cleanly(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    """Killed between parts; meanwhile the upload is aborted on the S3 side (a lifecycle
    rule, an operator). The restarted relay sees NoSuchUpload and uploads afresh."""
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    clip = os.urandom(CLIP_BYTES)
    config = write_config(tmp_path / "relay.toml", raw)
    async with relay_process(
        config, tls.client_context(), env={crashpoints.ENV: crashpoints.UPLOAD_BETWEEN_PARTS}
    ) as relay:
        assert (await relay.device.post_clip(PATH, clip, filename="forgotten.mkv")).status == 200
        assert await relay.exited() != 0
        [upload] = (await s3.list_multipart_uploads(Bucket=bucket))["Uploads"]
        await s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        relay.restart_env({})
        await relay.start()
        await relay.wait_for("multipart_gone")
        await relay.wait_for("clip_uploaded", timeout=60)
    [key] = await list_keys(s3, bucket)
    assert await object_bytes(s3, bucket, key) == clip
    assert len(relay.named("multipart_started")) == 1  # the fresh upload
    assert not (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads")


async def test_after_a_crash_the_newest_free_upload_is_adopted_and_only_true_orphans_aborted(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    """Three uploads open for one key after a crash between create and its record: one
    another clip of the spool is still filling, one stale (begun before), and the one the
    crash left. The crashed clip adopts exactly its own; the other clip's upload is left
    alone, and the stale one is aborted."""
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    # Two workers, and slow enough that the other clip is still uploading when the
    # crashed one restarts (same file name, same day: one key for both, with a template
    # that leaves out the footage's times, which random bytes take from the arrival).
    raw["s3"].update(
        workers=2, max_upload_bytes_per_s=2 * 1024 * 1024, key_template="{camera}/{date:%Y/%m/%d}/{filename}"
    )
    config = write_config(tmp_path / "relay.toml", raw)
    other_clip, crashed_clip = os.urandom(CLIP_BYTES), os.urandom(CLIP_BYTES)
    async with relay_process(
        config, tls.client_context(), env={crashpoints.ENV: crashpoints.UPLOAD_BETWEEN_PARTS}
    ) as relay:
        assert (await relay.device.post_clip(PATH, other_clip, filename="same.mkv")).status == 200
        assert await relay.exited() != 0
        [held] = (await s3.list_multipart_uploads(Bucket=bucket))["Uploads"]
        key = held["Key"]
        stale = (await s3.create_multipart_upload(Bucket=bucket, Key=key))["UploadId"]
        # S3's Initiated may count whole seconds (the test server's does): the crashed
        # upload must be begun in a later second than the stale one, or "newest" is a tie.
        [began] = [
            u["Initiated"]
            for u in (await s3.list_multipart_uploads(Bucket=bucket))["Uploads"]
            if u["UploadId"] == stale
        ]
        await wait_until(lambda: datetime.now(UTC) >= began + timedelta(seconds=1.05), what="the next second")

        relay.restart_env({crashpoints.ENV: crashpoints.UPLOAD_AFTER_CREATE})
        await relay.start()
        assert (await relay.device.post_clip(PATH, crashed_clip, filename="same.mkv")).status == 200
        assert await relay.exited() != 0
        open_ids = {u["UploadId"] for u in (await s3.list_multipart_uploads(Bucket=bucket))["Uploads"]}
        [crashed] = open_ids - {held["UploadId"], stale}

        relay.restart_env({})
        await relay.start()
        adopted = await relay.wait_for("multipart_adopted", timeout=60)
        await wait_until(lambda: len(relay.named("clip_uploaded")) == 2, timeout=60, what="both clips delivered")

    assert adopted["upload_id"] == crashed
    assert [e["upload_id"] for e in relay.named("multipart_orphan_aborted")] == [stale]
    # The other clip finished the upload it held: never aborted, never started over.
    # (Whichever completes second finds the key taken and goes to "same~<clip id>.mkv".)
    assert not relay.named("multipart_gone")
    assert [e["key"] for e in relay.named("multipart_started") if e["key"] == key] == []
    keys = await list_keys(s3, bucket)
    assert sorted([await object_bytes(s3, bucket, k) for k in keys]) == sorted([other_clip, crashed_clip])
    assert not (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads")
