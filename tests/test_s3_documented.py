"""S3 as Amazon documents it, where the test server behaves otherwise.

AWS answers some requests in ways SeaweedFS never does. A TLS-terminating proxy in
front of the test S3 gives those answers, word for word as documented, and the
relay's reaction is checked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from relay.dev.local_s3 import LocalS3
from tests.support.faultproxy import AnswerProxy, Scripted, complete_multipart, head_object, put_object
from tests.support.harness import (
    PATH,
    TLS,
    axis_relay,
    list_keys,
    object_bytes,
    raw_config,
    relay_config,
    running_relay,
    wait_until,
    write_config,
)

CONFLICT = "A conflicting conditional operation is currently in progress against this resource. Please try again."


def conflict(matches: Any) -> Scripted:
    return Scripted(matches, 409, "Conflict", "ConditionalRequestConflict", CONFLICT)


@pytest.fixture
async def proxy_for(s3_server: LocalS3, tls: TLS) -> AsyncIterator[Any]:
    """Starts a proxy in front of the test S3 with the given script; stops it after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(*script: Scripted) -> AnswerProxy:
            port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
            proxy = AnswerProxy(port, tls.server_context(), tls.client_context(), list(script))
            return await stack.enter_async_context(proxy.running())

        yield start


async def test_a_409_on_put_is_retried_not_quarantined(
    tmp_path: Path, tls: TLS, proxy_for: Any, s3: Any, bucket: str
) -> None:
    proxy = await proxy_for(conflict(put_object))
    config = relay_config(tmp_path, tls, f"https://127.0.0.1:{proxy.port}", bucket)
    clip = os.urandom(200_000)
    async with running_relay(config, tls) as relay:
        assert (await relay.device.post_clip(PATH, clip, filename="raced.mkv")).status == 200
        await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the clip, after the conflict")
        stats = await relay.stop()
    assert proxy.answered == 1
    assert stats.retries_by_reason["ConditionalRequestConflict"] == 1
    assert stats.clips_quarantined == 0
    [key] = await list_keys(s3, bucket)
    assert await object_bytes(s3, bucket, key) == clip


async def test_a_409_on_complete_uploads_every_part_again_and_leaves_nothing_open(
    tmp_path: Path, tls: TLS, proxy_for: Any, s3: Any, bucket: str
) -> None:
    proxy = await proxy_for(conflict(complete_multipart))
    config = relay_config(tmp_path, tls, f"https://127.0.0.1:{proxy.port}", bucket)
    clip = os.urandom(11 * 1024 * 1024)  # three 5 MiB parts
    with structlog.testing.capture_logs() as logs:
        async with running_relay(config, tls) as relay:
            assert (await relay.device.post_clip(PATH, clip, filename="raced-big.mkv")).status == 200
            await wait_until(lambda: relay.stats.clips_uploaded == 1, timeout=60, what="the clip, after the conflict")
            stats = await relay.stop()
    assert proxy.answered == 1
    assert stats.retries_by_reason["ConditionalRequestConflict"] == 1
    assert stats.clips_quarantined == 0
    events = [e["event"] for e in logs]
    assert events.count("multipart_started") == 2  # a new upload, as AWS says
    assert "multipart_superseded_aborted" in events
    [key] = await list_keys(s3, bucket)
    assert await object_bytes(s3, bucket, key) == clip
    assert not (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads")


async def test_a_403_on_the_head_check_names_the_missing_s3_listbucket(
    tmp_path: Path, tls: TLS, proxy_for: Any, bucket: str
) -> None:
    """Without s3:ListBucket, HeadObject on a missing key answers 403, not 404: exactly
    the check after a conditional write was refused, or an old upload expired."""
    taken = Scripted(
        put_object, 412, "Precondition Failed", "PreconditionFailed", "At least one of the pre-conditions did not hold"
    )
    no_list = Scripted(head_object, 403, "Forbidden", "403", "Forbidden")
    proxy = await proxy_for(taken, no_list)
    config = relay_config(tmp_path, tls, f"https://127.0.0.1:{proxy.port}", bucket)
    async with running_relay(config, tls) as relay:
        assert (await relay.device.post_clip(PATH, os.urandom(10_000))).status == 200
        await wait_until(lambda: relay.stats.destination_refusal is not None, what="delivery paused")
        refusal = relay.stats.destination_refusal
        assert relay.quarantined() == []  # a permission is the relay's fault, not the clip's
        assert len(relay.queued()) == 1
    assert refusal is not None
    assert refusal.code == "HeadForbidden"
    assert "s3:ListBucket" in refusal.fix


async def test_an_sse_kms_denial_names_the_key_permissions(
    tmp_path: Path, tls: TLS, proxy_for: Any, bucket: str
) -> None:
    kms = Scripted(
        put_object,
        403,
        "Forbidden",
        "AccessDenied",
        "User: arn:aws:iam::123456789012:user/relay is not authorized to perform: kms:GenerateDataKey on resource: "
        "arn:aws:kms:eu-west-1:123456789012:key/1234abcd because no identity-based policy allows the action",
    )
    proxy = await proxy_for(kms)
    config = relay_config(tmp_path, tls, f"https://127.0.0.1:{proxy.port}", bucket)
    async with running_relay(config, tls) as relay:
        assert (await relay.device.post_clip(PATH, os.urandom(10_000))).status == 200
        await wait_until(lambda: relay.stats.destination_refusal is not None, what="delivery paused")
        refusal = relay.stats.destination_refusal
        assert relay.quarantined() == []
    assert refusal is not None
    assert refusal.code == "KMS.AccessDenied"
    assert "kms:GenerateDataKey" in refusal.fix
    assert "kms:Decrypt" in refusal.fix


async def s3_check(config_file: Path) -> tuple[int, str]:
    code, out, err = await axis_relay("s3", "check", "--config", str(config_file))
    return code, out + err


async def test_s3_check_passes_against_a_bucket_that_works(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    code, out = await s3_check(write_config(tmp_path / "relay.toml", raw))
    assert code == 0, out
    assert "HeadObject on a missing key answers 404" in out
    assert "AbortMultipartUpload" in out
    assert await list_keys(s3, bucket) == []  # the probe was deleted
    assert not (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads")


async def test_s3_check_names_each_missing_permission(tmp_path: Path, tls: TLS, proxy_for: Any, bucket: str) -> None:
    missing_key = Scripted(lambda line: line.startswith(b"HEAD ") and b"/missing-" in line, 403, "Forbidden", "403", "")
    no_list = Scripted(
        lambda line: line.startswith(b"GET ") and b"?uploads" in line, 403, "Forbidden", "AccessDenied", "Access Denied"
    )
    proxy = await proxy_for(missing_key, no_list)
    raw = raw_config(tmp_path, tls, f"https://127.0.0.1:{proxy.port}", bucket)
    code, out = await s3_check(write_config(tmp_path / "relay.toml", raw))
    assert code == 1
    assert "s3:ListBucket on the bucket (without it a missing key answers 403)" in out
    assert "it needs s3:ListBucketMultipartUploads" in out
    assert "NOT VERIFIED" in out


async def test_s3_check_names_a_missing_bucket(tmp_path: Path, tls: TLS, s3_server: LocalS3) -> None:
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, "no-such-bucket-here")
    code, out = await s3_check(write_config(tmp_path / "relay.toml", raw))
    assert code == 1
    assert "does not exist; create it or correct s3.bucket" in out


async def test_over_https_the_body_is_not_hashed_again_for_the_signature(
    tmp_path: Path, tls: TLS, proxy_for: Any, bucket: str
) -> None:
    proxy = await proxy_for()  # no script: it only looks
    config = relay_config(tmp_path, tls, f"https://127.0.0.1:{proxy.port}", bucket)
    async with running_relay(config, tls) as relay:
        assert (await relay.device.post_clip(PATH, os.urandom(50_000))).status == 200
        await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the upload")
    [put] = [h for h in proxy.heads if put_object(h.split(b"\r\n", 1)[0])]
    assert b"x-amz-content-sha256: unsigned-payload" in put.lower()
    assert b"x-amz-checksum-crc32c:" in put.lower()  # S3 still verifies every byte


async def test_s3_check_tells_wrong_credentials_from_a_missing_permission(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    for s3_section, code, fix in (
        ({"secret_access_key": "not-the-secret"}, "SignatureDoesNotMatch", "correct the AWS secret key"),
        ({"access_key_id": "AKIANOSUCHKEY0000000"}, "InvalidAccessKeyId", "correct the AWS access key"),
    ):
        raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket, s3=s3_section)
        status, out = await s3_check(write_config(tmp_path / "relay.toml", raw))
        assert status == 1
        assert f"FAIL credentials: S3 does not accept them ({code}); {fix}" in out
        assert "ListBucket" not in out
