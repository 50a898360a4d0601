"""Bad requests get a clear 4xx, never a 2xx for something not stored, never a crash."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from relay.dev.local_s3 import LocalS3
from tests.support.device import read_answer
from tests.support.harness import (
    DEVICE,
    PATH,
    TLS,
    TOKEN,
    RunningRelay,
    clip_name,
    list_keys,
    relay_config,
    running_relay,
    wait_until,
)


def spool_is_empty(relay: RunningRelay) -> bool:
    incoming = relay.spool / "incoming"
    return not relay.queued() and not (incoming.exists() and any(incoming.iterdir()))


async def assert_still_serving(relay: RunningRelay) -> None:
    answer = await relay.device.post_clip(PATH, b"still-alive")
    assert answer.status == 200


async def test_unknown_device_is_404(relay: RunningRelay, s3: Any, bucket: str) -> None:
    answer = await relay.device.post_clip("/upload/no-such-cam?accessToken=x", b"data")
    assert answer.status == 404
    assert b"no-such-cam" in answer.body
    assert spool_is_empty(relay)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        (f"/upload/{DEVICE}?accessToken=wrong", {}),
        (f"/upload/{DEVICE}", {}),
        (f"/upload/{DEVICE}", {"Authorization": "Basic " + base64.b64encode(b"root:nope").decode()}),
        (f"/upload/{DEVICE}", {"Authorization": "Basic !!!notbase64"}),
    ],
    ids=["wrong-token", "no-credentials", "wrong-password", "garbled-basic"],
)
async def test_wrong_credentials_are_401_and_store_nothing(
    relay: RunningRelay, path: str, headers: dict[str, str]
) -> None:
    answer = await relay.device.post_clip(path, os.urandom(5000), extra_headers=headers)
    assert answer.status == 401
    assert answer.headers.get("www-authenticate", "").startswith("Basic")
    assert spool_is_empty(relay)
    get = await relay.device.request("GET", path, headers=headers)
    assert get.status == 401


async def test_body_shorter_than_content_length_gets_no_2xx(relay: RunningRelay, s3: Any, bucket: str) -> None:
    with structlog.testing.capture_logs() as logs:
        _reader, writer = await relay.device.start_clip(PATH, b"a" * 10_000, total_length=50_000)
        await wait_until(lambda: any((relay.spool / "incoming").iterdir()), what="the partial clip in incoming/")
        writer.close()  # the device goes away mid-body
        await wait_until(lambda: spool_is_empty(relay), what="the partial clip to be removed")
    # The operator's line names the clip cut off and how much of it came.
    [cut] = [e for e in logs if e["event"] == "clip_rejected"]
    assert cut["filename"] == "partial.mkv"
    assert cut["bytes_received"] == 10_000
    await assert_still_serving(relay)
    await wait_until(lambda: not relay.queued(), what="queue to drain")
    assert [clip_name(k) for k in await list_keys(s3, bucket)] == ["video23-04-13_21-50-27-63_00001.mkv"]


async def test_body_over_the_limit_is_413(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket, ingest={"max_body_bytes": 100_000})
    async with running_relay(config, tls) as relay:
        declared = await relay.device.post_clip(PATH, os.urandom(100_001))
        assert declared.status == 413
        assert b"ingest.max_body_bytes (100000 bytes)" in declared.body  # the limit, stated
        streamed = await relay.device.post_clip(PATH, os.urandom(150_000), chunked=True, pieces=10)
        assert streamed.status == 413
        assert spool_is_empty(relay)
        await assert_still_serving(relay)


async def test_silent_sender_hits_the_idle_timeout(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket, ingest={"idle_timeout_s": 0.5})
    async with running_relay(config, tls) as relay:
        reader, writer = await relay.device.start_clip(PATH, b"b" * 1000, total_length=10_000)
        answer = await asyncio.wait_for(read_answer(reader), 10)
        writer.close()
        assert answer.status == 408
        assert spool_is_empty(relay)
        # A slow device that keeps sending is not cut off: only silence is.
        slow = await relay.device.post_clip(PATH, os.urandom(4000), chunked=True, pieces=8, pace_s=0.2)
        assert slow.status == 200


async def test_broken_chunked_encoding_is_rejected(relay: RunningRelay) -> None:
    reader, writer = await relay.device._open()
    writer.write(
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot-hex\r\n0\r\n\r\n".encode()
    )
    await writer.drain()
    try:
        answer = await asyncio.wait_for(read_answer(reader), 10)
        assert 400 <= answer.status < 500
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # closing the connection without a 2xx is an acceptable refusal too
    finally:
        writer.close()
    await wait_until(lambda: spool_is_empty(relay), what="nothing left in the spool")
    await assert_still_serving(relay)


async def test_other_methods_are_405(relay: RunningRelay) -> None:
    answer = await relay.device.request("DELETE", PATH)
    assert answer.status == 405


async def test_guessing_credentials_is_braked_per_address(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket, ingest={"auth_failures_per_minute": 3})
    async with running_relay(config, tls) as relay:
        for _ in range(3):
            assert (await relay.device.request("GET", f"/upload/{DEVICE}?accessToken=guess")).status == 401
        # Now even the right token is not checked from this address.
        answer = await relay.device.post_clip(PATH, b"x" * 100)
        assert answer.status == 429
        assert answer.headers["retry-after"] == "60"
        assert spool_is_empty(relay)


async def test_device_source_allow_list(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str) -> None:
    config = relay_config(
        tmp_path,
        tls,
        s3_server.endpoint_url,
        bucket,
        devices={
            DEVICE: {"token": TOKEN, "allow_from": ["10.99.0.0/16"]},
            "lab": {"token": TOKEN, "allow_from": ["127.0.0.0/8"]},
        },
    )
    with structlog.testing.capture_logs() as logs:
        async with running_relay(config, tls) as relay:
            refused = await relay.device.post_clip(PATH, b"x" * 100)
            unknown = await relay.device.post_clip(f"/upload/nobody?accessToken={TOKEN}", b"x" * 100)
            assert (await relay.device.post_clip(f"/upload/lab?accessToken={TOKEN}", b"x" * 100)).status == 200
    # A stranger learns nothing: the answer is the one for a name not configured at all.
    assert refused.status == unknown.status == 404
    assert refused.body.replace(DEVICE.encode(), b"nobody") == unknown.body
    # The operator's log says what happened.
    [reason] = [e["reason"] for e in logs if e["event"] == "clip_rejected" and e["camera"] == DEVICE]
    assert "allow_from" in reason


async def test_too_many_uploads_from_one_device_is_429(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket, ingest={"max_uploads_per_device": 1})
    async with running_relay(config, tls) as relay:
        reader, writer = await relay.device.start_clip(PATH, b"a" * 1000, total_length=2000)
        await wait_until(lambda: any((relay.spool / "incoming").iterdir()), what="the first upload in progress")
        second = await relay.device.post_clip(PATH, b"b" * 100)
        assert second.status == 429
        writer.write(b"a" * 1000)
        first = await asyncio.wait_for(read_answer(reader), 10)
        writer.close()
        assert first.status == 200


async def test_oversized_headers_are_refused(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket, ingest={"max_header_bytes": 2048})
    async with running_relay(config, tls) as relay:
        answer = await relay.device.post_clip(PATH, b"x" * 100, extra_headers={"X-Padding": "p" * 5000})
        assert 400 <= answer.status < 500
        long_line = await relay.device.request("GET", PATH + "&pad=" + "q" * 5000)
        assert 400 <= long_line.status < 500
        assert spool_is_empty(relay)
        await assert_still_serving(relay)


async def test_empty_body_is_400(relay: RunningRelay) -> None:
    answer = await relay.device.post_clip(PATH, b"")
    assert answer.status == 400
    assert b"empty" in answer.body
    assert spool_is_empty(relay)


def form(fields: dict[str, str] | list[tuple[str, str]], clip: bytes, boundary: str = "xYzZY") -> bytes:
    items = fields.items() if isinstance(fields, dict) else fields
    parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in items)
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="form.mkv"\r\n\r\n'
    return (parts + head).encode() + clip + f"\r\n--{boundary}--\r\n".encode()


async def test_form_fields_are_bounded_and_credentials_are_never_stored(tmp_path: Path, tls: TLS) -> None:
    # S3 unreachable: the clip stays in the spool, where its meta.json can be read.
    async with running_relay(relay_config(tmp_path, tls, "https://127.0.0.1:1", "clips"), tls) as relay:
        await _form_fields_are_bounded(relay)


async def _form_fields_are_bounded(relay: RunningRelay) -> None:
    multipart = {"Content-Type": "multipart/form-data; boundary=xYzZY"}
    many = [(f"f{n}", "v") for n in range(200)]
    answer = await relay.device.request("POST", PATH, body=form(many, b"clip"), headers=multipart)
    assert answer.status == 400
    assert b"form fields" in answer.body
    long = {"note": "x" * 5000}
    answer = await relay.device.request("POST", PATH, body=form(long, b"clip"), headers=multipart)
    assert answer.status == 400
    assert b"longer than 4096 bytes" in answer.body
    secret = {"accessToken": "leaked-token", "password": "leaked-password", "site": "lobby"}
    answer = await relay.device.request("POST", PATH, body=form(secret, b"clip"), headers=multipart)
    assert answer.status == 200, answer.body
    clip_id = json.loads(answer.body)["clip_id"]
    meta = (relay.spool / "queue" / clip_id / "meta.json").read_text()
    assert "leaked" not in meta
    assert json.loads(meta)["query"]["site"] == "lobby"


async def test_malformed_multipart_is_400_not_500(relay: RunningRelay) -> None:
    multipart = {"Content-Type": "multipart/form-data"}
    no_boundary = await relay.device.request("POST", PATH, body=b"x" * 100, headers=multipart)
    assert no_boundary.status == 400, no_boundary.body
    unterminated = b'--xYzZY\r\nContent-Disposition: form-data; name="file"; filename="a.mkv"\r\n\r\n' + b"x" * 1000
    answer = await relay.device.request(
        "POST", PATH, body=unterminated, headers={"Content-Type": "multipart/form-data; boundary=xYzZY"}
    )
    assert answer.status == 400, answer.body
    assert relay.queued() == []


async def expect_continue(relay: RunningRelay, path: str, length: int) -> tuple[bytes, Any]:
    """Send a head with Expect: 100-continue; the first status line back, and the stream."""
    reader, writer = await relay.device._open()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: video/x-matroska\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), 10), (reader, writer)


async def test_expect_100_continue_only_after_credentials_and_size(relay: RunningRelay) -> None:
    status, (_, writer) = await expect_continue(relay, f"/upload/{DEVICE}?accessToken=wrong", 1000)
    writer.close()
    assert status.startswith(b"HTTP/1.1 401")  # refused before any body was asked for
    too_big = 10 * 1024**4
    status, (_, writer) = await expect_continue(relay, PATH, too_big)
    writer.close()
    assert status.startswith(b"HTTP/1.1 413")
    status, (reader, writer) = await expect_continue(relay, PATH, 1000)
    assert status.startswith(b"HTTP/1.1 100")
    assert await reader.readline() == b"\r\n"  # the interim answer has no headers
    writer.write(b"x" * 1000)
    await writer.drain()
    answer = await read_answer(reader)
    writer.close()
    assert answer.status == 200


async def test_an_allow_from_name_is_braked_like_an_unknown_one(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    """Were only unknown names braked, the 429 would tell a stranger which 404 hides a
    real device: both count as failures, and both get 429 at the same try."""
    answers: dict[str, list[int]] = {}
    for name in (DEVICE, "nobody"):
        config = relay_config(
            tmp_path / name,
            tls,
            s3_server.endpoint_url,
            bucket,
            ingest={"auth_failures_per_minute": 5},
            devices={DEVICE: {"token": TOKEN, "allow_from": ["10.99.0.0/16"]}},
        )
        async with running_relay(config, tls) as relay:
            answers[name] = [
                (await relay.device.request("GET", f"/upload/{name}?accessToken={TOKEN}")).status for _ in range(7)
            ]
    assert answers[DEVICE] == answers["nobody"] == [404] * 5 + [429] * 2


async def test_form_fields_cannot_bypass_the_limits(tmp_path: Path, tls: TLS) -> None:
    """Every field counts, not every distinct name; field bytes count against
    ingest.max_body_bytes; and silence mid-field ends the request like silence in a clip."""
    config = relay_config(
        tmp_path, tls, "https://127.0.0.1:1", "clips", ingest={"max_body_bytes": 64 * 1024, "idle_timeout_s": 1}
    )
    multipart = {"Content-Type": "multipart/form-data; boundary=xYzZY"}
    roomy = relay_config(tmp_path / "roomy", tls, "https://127.0.0.1:1", "clips")
    async with running_relay(roomy, tls) as relay:
        same_name = [("note", "v")] * 50_000
        answer = await relay.device.request("POST", PATH, body=form(same_name, b"clip"), headers=multipart)
        assert answer.status == 400
        assert b"more than 32 form fields" in answer.body
    async with running_relay(config, tls) as relay:
        # 30 fields of 4,000 bytes (120,000) and a clip of 1,000: over the 65,536 limit.
        big = [(f"f{n}", "x" * 4000) for n in range(30)]
        answer = await relay.device.request("POST", PATH, body=form(big, b"c" * 1000), headers=multipart)
        assert answer.status == 413, answer.body
        # A field, then 2 s of silence mid-field (idle_timeout_s is 1), then the rest.
        body = form({"note": "x" * 100}, b"clip")
        cut = body.index(b"x" * 50)
        started = time.monotonic()
        answer = await relay.device.request(
            "POST", PATH, body=[body[:cut], body[cut:]], headers=multipart, pace_s=2.0, content_length=len(body)
        )
        assert answer.status == 408, answer.body
        assert time.monotonic() - started < 10
        assert relay.queued() == []
