"""S3 as Amazon documents it, where the test server behaves otherwise.

AWS answers some requests in ways SeaweedFS never does. A TLS-terminating proxy in
front of the test S3 gives those answers, word for word as documented, and the
relay's reaction is checked.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from relay.dev.local_s3 import LocalS3
from tests.support.faultproxy import AnswerProxy, Scripted, complete_multipart, put_object
from tests.support.harness import PATH, TLS, list_keys, object_bytes, relay_config, running_relay, wait_until

CONFLICT = "A conflicting conditional operation is currently in progress against this resource. Please try again."


@pytest.fixture
def server_ssl(tls: TLS) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def conflict(matches: Any) -> Scripted:
    return Scripted(matches, 409, "Conflict", "ConditionalRequestConflict", CONFLICT)


@pytest.fixture
async def proxy_for(s3_server: LocalS3, server_ssl: ssl.SSLContext, tls: TLS) -> AsyncIterator[Any]:
    """Starts a proxy in front of the test S3 with the given script; stops it after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(*script: Scripted) -> AnswerProxy:
            port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
            proxy = AnswerProxy(port, server_ssl, tls.client_context(), list(script))
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
