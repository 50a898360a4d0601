"""The API Gateway path: relay -> API Gateway stand-in -> the cloud/ function -> S3.

The function (cloud/function/handler.py) runs in-process against the suite's SeaweedFS;
the stand-in enforces what API Gateway does (tests/apigw_standin.py).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import os
import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import crc32c
import pytest
from aiohttp import web

from cloud.function.handler import BadRequest, ClipBucket
from relay import crashpoints
from relay.config import APIGW_DEFAULT_BODY_BYTES, RelayConfig, parse_config
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3, free_port
from relay.ops.stats import RelayStats
from tests.support.apigw_standin import API_KEY, ApiGatewayStandIn, apigw_raw
from tests.support.chaos import kill_at_random
from tests.support.faultproxy import FaultProxy, Faults
from tests.support.harness import (
    DEVICE,
    PATH,
    TLS,
    RunningRelay,
    clip_name,
    http_get,
    list_keys,
    object_bytes,
    raw_config,
    running_relay,
    wait_until,
    write_config,
)
from tests.support.relay_process import relay_process

FILENAME = "video23-04-13_21-50-27-63_00001.mkv"
MiB = 1024 * 1024


def crc(data: bytes) -> str:
    return base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()


@pytest.fixture
def clip_bucket(function_s3: Any, bucket: str) -> ClipBucket:
    return ClipBucket(function_s3, bucket)


class Calls:
    """What the function was asked, by action, across threads."""

    def __init__(self, bucket: ClipBucket) -> None:
        self.counts: Counter[str] = Counter()
        self._bucket = bucket
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        if "httpMethod" in event:
            body = event["body"]
            raw = base64.b64decode(body) if event.get("isBase64Encoded") else body
            action = "handoff:" + str(json.loads(raw).get("action"))
        else:
            action = "upload"
        with self._lock:
            self.counts[action] += 1
        return self._bucket.handle(event)


@pytest.fixture
async def gateway(clip_bucket: ClipBucket, tls: TLS) -> AsyncIterator[ApiGatewayStandIn]:
    standin = ApiGatewayStandIn(Calls(clip_bucket), tls.cert_file, tls.key_file, api_keys=frozenset({API_KEY}))
    async with standin.running():
        yield standin


def calls(gateway: ApiGatewayStandIn) -> Counter[str]:
    assert isinstance(gateway.handler, Calls)
    return gateway.handler.counts


async def relay_delivers(config: RelayConfig, tls: TLS, clip: bytes, **post: Any) -> RelayStats:
    """Run the relay, send it one clip, wait until the clip is uploaded; what it counted."""
    async with running_relay(config, tls) as relay:
        assert (await relay.device.post_clip(PATH, clip, **post)).status == 200
        await wait_until(lambda: relay.stats.clips_uploaded == 1, timeout=120, what="the clip uploaded")
    return relay.stats


def assert_footage_metadata(metadata: dict[str, str]) -> None:
    """Through the hand-off too, the object says which footage it holds (#25): random
    bytes carry no header and the file name's time is not read without a template, so
    its times come from the arrival."""
    assert (metadata["camera"], metadata["origin"], metadata["sequence"]) == (DEVICE, "device", "1")
    assert metadata["times-from"] == "arrival,arrival"
    starts, ends = (datetime.fromisoformat(metadata[f"footage-{end}"]) for end in ("start", "end"))
    assert starts <= ends <= datetime.now(UTC)


async def only_quarantine_reason(relay: RunningRelay) -> dict[str, Any]:
    """Wait for the one clip sent to land in quarantine; its reason.json."""
    await wait_until(lambda: relay.quarantined() != [], what="the clip quarantined")
    [clip_id] = relay.quarantined()
    return relay.quarantine_reason(clip_id)


async def open_uploads(s3: Any, bucket: str) -> list[Any]:
    return list((await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []))


def mapped_event(
    body: bytes, *, filename: str | None = FILENAME, subfolder: str = "cam-1", **headers: str
) -> dict[str, Any]:
    """The event the /upload mapping template makes of a device's POST."""
    all_headers = {"Content-Type": "video/x-matroska", **headers}
    if filename:
        all_headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return {
        "body": base64.b64encode(body).decode(),
        "headers": all_headers,
        "params": {"path": {}, "querystring": {"subfolder": subfolder}, "header": all_headers},
        "stage-variables": {},
        "context": {"http-method": "POST", "resource-path": "/upload"},
    }


# The function on its own ----------------------------------------------------------


async def test_function_stores_the_seed_post_and_never_overwrites(
    clip_bucket: ClipBucket, s3: Any, bucket: str
) -> None:
    first, second = os.urandom(200_000), os.urandom(100_000)
    answer = await asyncio.to_thread(clip_bucket.handle, mapped_event(first))
    assert answer == {"key": f"cam-1/{FILENAME}", "already_present": False}
    assert await object_bytes(s3, bucket, f"cam-1/{FILENAME}") == first
    head = await s3.head_object(Bucket=bucket, Key=f"cam-1/{FILENAME}")
    assert head["ContentType"] == "video/x-matroska"
    # Another device's clip under the same name: kept beside, not over, the first.
    other = await asyncio.to_thread(clip_bucket.handle, mapped_event(second))
    assert other["key"].startswith("cam-1/video23-04-13_21-50-27-63_00001~")
    assert await object_bytes(s3, bucket, f"cam-1/{FILENAME}") == first
    assert await object_bytes(s3, bucket, other["key"]) == second


async def test_function_recognises_a_relay_retry_and_checks_the_bytes(
    clip_bucket: ClipBucket, s3: Any, bucket: str
) -> None:
    clip = os.urandom(150_000)
    event = mapped_event(clip, **{"X-Clip-Id": "20261127T010000.000000Z-0a1b2c3d", "X-Clip-Crc32c": crc(clip)})
    assert (await asyncio.to_thread(clip_bucket.handle, event))["already_present"] is False
    assert (await asyncio.to_thread(clip_bucket.handle, event))["already_present"] is True
    assert await list_keys(s3, bucket) == [f"cam-1/{FILENAME}"]
    bad = mapped_event(clip, filename="other.mkv", **{"X-Clip-Crc32c": crc(b"something else")})
    with pytest.raises(BadRequest, match="binary media types"):
        await asyncio.to_thread(clip_bucket.handle, bad)


async def test_lambda_entry_point_builds_its_client_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, s3_server: LocalS3, tls: TLS, s3: Any, bucket: str
) -> None:
    from cloud.function import handler

    for name, value in {
        "BUCKET": bucket,
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url,
        "AWS_CA_BUNDLE": str(tls.ca_file),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(handler, "_bucket", None)
    clip = os.urandom(10_000)
    answer = await asyncio.to_thread(handler.lambda_handler, mapped_event(clip), None)
    assert answer["key"] == f"cam-1/{FILENAME}"
    assert await object_bytes(s3, bucket, answer["key"]) == clip


@pytest.mark.parametrize(
    ("subfolder", "filename"),
    [("../etc", FILENAME), ("cam-1", "a/../../b.mkv"), (".", FILENAME), ("cam 1", FILENAME), ("cam-1", "..mkv")],
)
async def test_function_refuses_names_outside_the_layout(
    clip_bucket: ClipBucket, subfolder: str, filename: str
) -> None:
    event = mapped_event(b"x" * 100, filename=filename, subfolder=subfolder)
    with pytest.raises(BadRequest, match="not a safe name"):
        await asyncio.to_thread(clip_bucket.handle, event)


async def test_handoff_refuses_keys_outside_the_layout(clip_bucket: ClipBucket) -> None:
    for key in ("cam-1/a/b.mkv", "../x.mkv", "nofolder.mkv"):
        event = {"httpMethod": "POST", "body": json.dumps({"action": "head", "key": key}), "isBase64Encoded": False}
        answer = await asyncio.to_thread(clip_bucket.handle, event)
        assert answer["statusCode"] == 400, key
        assert "not a safe name" in json.loads(answer["body"])["message"]


# The stand-in enforces what API Gateway does -------------------------------------------


async def test_standin_enforces_the_gateway_limits(gateway: ApiGatewayStandIn, tls: TLS) -> None:
    connector = aiohttp.TCPConnector(ssl=tls.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(
            body: bytes, content_type: str = "video/x-matroska", key: str | None = API_KEY
        ) -> tuple[int, str]:
            headers = {"Content-Type": content_type, "Content-Disposition": 'attachment; filename="t.mkv"'}
            if key:
                headers["x-api-key"] = key
            async with http.post(
                gateway.url("upload"), params={"subfolder": "cam-1"}, data=io.BytesIO(body), headers=headers
            ) as r:
                return r.status, await r.text()

        assert (await post(b"x", key=None))[0] == 403
        assert (await post(b"x", key="wrong"))[0] == 403
        status, text = await post(b"\0" * (10 * MiB + 1))
        assert (status, json.loads(text)["message"]) == (413, "Request Too Long")
        # Under 10 MiB, but base64 makes it more than a Lambda request may hold.
        assert (await post(b"\0" * (APIGW_DEFAULT_BODY_BYTES + 64 * 1024)))[0] == 500
        assert (await post(b"\0" * APIGW_DEFAULT_BODY_BYTES))[0] == 200  # the derived limit fits
        assert (await post(b"x", content_type="text/plain"))[0] == 415
        async with http.post(gateway.url("nowhere"), headers={"x-api-key": API_KEY}) as r:
            assert r.status == 403
            assert r.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
        gateway.integration_timeout_s = 0.2
        gateway.before_invoke = lambda resource: threading.Event().wait(1.0)
        assert (await post(b"slow"))[0] == 504


# Relay -> stand-in -> function -> S3 ---------------------------------------------------


async def test_small_clip_is_posted_like_a_device_would(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    config = parse_config(apigw_raw(tmp_path, tls, gateway), environ={})
    clip = os.urandom(1 * MiB)
    stats = await relay_delivers(config, tls, clip)
    assert stats.uploads_by_route == Counter({"post": 1})
    key = f"{DEVICE}/{FILENAME}"
    assert await object_bytes(s3, bucket, key) == clip
    head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == crc(clip)
    assert calls(gateway) == Counter({"upload": 1})


async def test_large_clip_goes_through_the_multipart_handoff(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    config = parse_config(apigw_raw(tmp_path, tls, gateway, part_size_bytes=8 * MiB), environ={})
    clip = os.urandom(60 * MiB)
    stats = await relay_delivers(config, tls, clip, chunked=True, pieces=60)
    assert stats.uploads_by_route == Counter({"handoff": 1})
    key = f"{DEVICE}/{FILENAME}"
    assert await object_bytes(s3, bucket, key) == clip
    head = await s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == crc(clip)
    assert_footage_metadata(head["Metadata"])
    assert calls(gateway)["upload"] == 0
    assert calls(gateway)["handoff:create"] == 1
    assert calls(gateway)["handoff:part"] == 8  # 60 MiB in 8 MiB parts
    assert calls(gateway)["handoff:complete"] == 1
    assert gateway.largest_body < 10_000  # the bytes went to S3, never through the gateway
    assert await open_uploads(s3, bucket) == []


async def test_clip_between_body_limit_and_multipart_takes_one_presigned_put(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    config = parse_config(apigw_raw(tmp_path, tls, gateway, multipart_threshold_bytes=16 * MiB), environ={})
    clip = os.urandom(6 * MiB)
    await relay_delivers(config, tls, clip)
    assert await object_bytes(s3, bucket, f"{DEVICE}/{FILENAME}") == clip
    assert calls(gateway) == Counter({"handoff:put": 1})
    assert_footage_metadata((await s3.head_object(Bucket=bucket, Key=f"{DEVICE}/{FILENAME}"))["Metadata"])


async def test_restart_in_the_middle_of_a_handoff_resumes_it(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    raw = apigw_raw(tmp_path, tls, gateway, part_size_bytes=8 * MiB)
    crash = {crashpoints.ENV: crashpoints.UPLOAD_BETWEEN_PARTS}
    clip = os.urandom(60 * MiB)
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context(), env=crash) as relay:
        answer = await relay.device.post_clip(PATH, clip, chunked=True, pieces=60)
        assert answer.status == 200
        assert await relay.exited(timeout=60) != 0  # killed after the first part
        assert calls(gateway)["handoff:part"] == 1
        relay.restart_env({})
        await relay.start()
        resumed = await relay.wait_for("multipart_resumed", timeout=60)
        assert resumed["parts_kept"] == 1
        await relay.wait_for("clip_uploaded", timeout=120)
    assert await object_bytes(s3, bucket, f"{DEVICE}/{FILENAME}") == clip
    assert calls(gateway)["handoff:create"] == 1  # the same multipart upload, resumed
    assert calls(gateway)["handoff:part"] == 8
    assert await open_uploads(s3, bucket) == []


async def test_a_crash_after_the_handoff_created_an_upload_leaves_none_open(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    raw = apigw_raw(tmp_path, tls, gateway, part_size_bytes=8 * MiB)
    crash = {crashpoints.ENV: crashpoints.UPLOAD_AFTER_CREATE}
    clip = os.urandom(20 * MiB)
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context(), env=crash) as relay:
        assert (await relay.device.post_clip(PATH, clip, chunked=True, pieces=20)).status == 200
        assert await relay.exited(timeout=60) != 0  # S3 holds an upload the relay never recorded
        assert len(await open_uploads(s3, bucket)) == 1
        relay.restart_env({})
        await relay.start()
        await relay.wait_for("multipart_adopted", timeout=60)
        await relay.wait_for("clip_uploaded", timeout=120)
    assert await object_bytes(s3, bucket, f"{DEVICE}/{FILENAME}") == clip
    assert calls(gateway)["handoff:create"] == 1  # adopted, not created again
    assert await open_uploads(s3, bucket) == []


async def test_no_handoff_and_no_fallback_quarantines_with_the_limit_and_the_fix(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    gateway.handoff_enabled = False  # the seed's API: /upload only
    config = parse_config(apigw_raw(tmp_path, tls, gateway), environ={})
    async with running_relay(config, tls) as relay:
        assert (await relay.device.post_clip(PATH, os.urandom(6 * MiB))).status == 200
        reason = await only_quarantine_reason(relay)
    assert f"apigw.max_body_bytes = {APIGW_DEFAULT_BODY_BYTES}" in reason["reason"]
    assert "Missing Authentication Token" in reason["reason"]
    assert "apigw.handoff_url" in reason["fix"]
    assert 'fallback = "s3"' in reason["fix"]
    assert calls(gateway)["upload"] == 0  # never sent a body the gateway would refuse
    assert await list_keys(s3, bucket) == []


async def test_no_handoff_goes_to_the_s3_fallback(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    s3_section = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)["s3"]
    raw = apigw_raw(tmp_path, tls, gateway, s3=s3_section, fallback="s3")
    del raw["apigw"]["handoff_url"]
    clip, small = os.urandom(6 * MiB), os.urandom(100_000)
    async with running_relay(parse_config(raw, environ={}), tls) as relay:
        assert (await relay.device.post_clip(PATH, clip, filename="large.mkv")).status == 200
        assert (await relay.device.post_clip(PATH, small, filename="small.mkv")).status == 200
        await wait_until(lambda: relay.stats.clips_uploaded == 2, what="both clips uploaded")
    assert relay.stats.uploads_by_route == Counter({"post": 1, "fallback_s3": 1})
    keys = await list_keys(s3, bucket)
    assert f"{DEVICE}/small.mkv" in keys  # through the gateway
    [large] = [k for k in keys if clip_name(k) == "large.mkv" and k.count("/") == 4]  # s3.key_template
    assert await object_bytes(s3, bucket, large) == clip
    assert calls(gateway) == Counter({"upload": 1})


async def test_a_413_sends_the_clip_to_the_handoff_after_one_try(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    # A gateway (or a proxy before it) with a tighter cap than the relay was told.
    config = parse_config(apigw_raw(tmp_path, tls, gateway), environ={})
    clip = os.urandom(3 * MiB)
    gateway.body_limit = 1 * MiB
    await relay_delivers(config, tls, clip)
    assert gateway.statuses[("upload", 413)] == 1
    assert calls(gateway) == Counter({"handoff:put": 1})
    assert await object_bytes(s3, bucket, f"{DEVICE}/{FILENAME}") == clip


async def test_a_413_without_handoff_quarantines_after_one_try(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    gateway.body_limit = 1 * MiB
    gateway.handoff_enabled = False
    config = parse_config(apigw_raw(tmp_path, tls, gateway), environ={})
    async with running_relay(config, tls) as relay:
        assert (await relay.device.post_clip(PATH, os.urandom(3 * MiB))).status == 200
        reason = await only_quarantine_reason(relay)
    assert gateway.statuses[("upload", 413)] == 1  # recognised, not retried
    assert "refused for its size by the gateway" in reason["reason"]
    assert "Request Too Long" in reason["reason"]


async def test_the_lambda_limit_behind_a_500_is_recognised(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    # An operator raised the body limit above what the Lambda request can carry.
    config = parse_config(apigw_raw(tmp_path, tls, gateway, max_body_bytes=8 * MiB), environ={})
    clip = os.urandom(7 * MiB)
    await relay_delivers(config, tls, clip)
    assert gateway.statuses[("upload", 500)] == 1
    assert calls(gateway)["handoff:complete"] == 1
    assert await object_bytes(s3, bucket, f"{DEVICE}/{FILENAME}") == clip


async def test_a_redirect_is_not_followed_into_a_false_delivery(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    # e.g. a URL that moved: following it would turn the POST into a GET, answered 200.
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/page")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="welcome")

    app = web.Application()
    app.router.add_post("/moved", moved)
    app.router.add_get("/page", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        raw = apigw_raw(tmp_path, tls, gateway, url=f"http://127.0.0.1:{port}/moved")
        async with running_relay(parse_config(raw, environ={}), tls) as relay:
            assert (await relay.device.post_clip(PATH, os.urandom(1000))).status == 200
            reason = await only_quarantine_reason(relay)
            assert relay.stats.clips_uploaded == 0
    finally:
        await runner.cleanup()
    assert "redirects (HTTP 302)" in reason["reason"]
    assert "apigw.url" in reason["fix"]


async def test_gateway_outage_clips_wait_and_then_all_arrive(
    tmp_path: Path, tls: TLS, clip_bucket: ClipBucket, s3: Any, bucket: str
) -> None:
    gateway = ApiGatewayStandIn(Calls(clip_bucket), tls.cert_file, tls.key_file, api_keys=frozenset({API_KEY}))
    gateway.port = free_port()  # nothing listens there yet: the WAN is down
    config = parse_config(apigw_raw(tmp_path, tls, gateway), environ={})
    clips = {"small.mkv": os.urandom(200_000), "large.mkv": os.urandom(12 * MiB)}
    async with running_relay(config, tls) as relay:
        for name, clip in clips.items():
            assert (await relay.device.post_clip(PATH, clip, filename=name)).status == 200
        await wait_until(lambda: relay.stats.upload_retries >= 4, what="uploads retried during the outage")
        assert relay.stats.clips_uploaded == 0
        assert len(relay.queued()) == 2
        async with gateway.running():
            await wait_until(lambda: relay.stats.clips_uploaded == 2, what="both clips uploaded")
    for name, clip in clips.items():
        assert await object_bytes(s3, bucket, f"{DEVICE}/{name}") == clip
    assert relay.quarantined() == []


async def test_resets_and_stalls_on_the_way_to_the_gateway_delay_but_never_lose(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    faults = Faults(reset_connections=2, stall_connections=1, after_bytes=64 * 1024)
    async with FaultProxy("127.0.0.1", gateway.port, faults).running() as proxy:
        raw = apigw_raw(tmp_path, tls, gateway, read_timeout_s=1.0, connect_timeout_s=1.0)
        raw["apigw"]["url"] = f"https://127.0.0.1:{proxy.port}/prod/upload"
        raw["apigw"]["handoff_url"] = f"https://127.0.0.1:{proxy.port}/prod/handoff"
        clips = {f"c{n}.mkv": os.urandom(1 * MiB) for n in range(3)}
        large = os.urandom(11 * MiB)
        async with running_relay(parse_config(raw, environ={}), tls) as relay:
            for name, clip in clips.items():
                assert (await relay.device.post_clip(PATH, clip, filename=name)).status == 200
            await wait_until(lambda: relay.stats.clips_uploaded == 3, timeout=60, what="the POSTed clips")
            # Every faulty connection carried a POST body; now a hand-off through the proxy.
            assert (await relay.device.post_clip(PATH, large, filename="large.mkv")).status == 200
            await wait_until(lambda: relay.stats.clips_uploaded == 4, timeout=60, what="the handed-off clip")
            stats = relay.stats
    assert sorted(faults.injected) == ["reset", "reset", "stall"]
    assert stats.clips_quarantined == 0
    assert stats.upload_retries >= 2
    clips["large.mkv"] = large
    assert sorted(await list_keys(s3, bucket)) == sorted(f"{DEVICE}/{name}" for name in clips)
    for name, clip in clips.items():
        assert await object_bytes(s3, bucket, f"{DEVICE}/{name}") == clip


async def test_an_expired_presigned_url_is_replaced(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, function_s3: Any, s3: Any, bucket: str
) -> None:
    # The first part URL expires before it is used (as after an outage between
    # asking and sending): the part is asked for again, not given up.
    # Only that first URL is short-lived: the one asked for again must not expire too on
    # a slow machine (a 1 s life for every URL made the test depend on the part's speed).
    short_lived, lasting = ClipBucket(function_s3, bucket, url_ttl_s=1), ClipBucket(function_s3, bucket)
    delayed = threading.Event()

    def handle(event: dict[str, Any]) -> dict[str, Any]:
        if "httpMethod" in event and '"part"' in event["body"] and not delayed.is_set():
            answer = short_lived.handle(event)
            delayed.set()
            threading.Event().wait(2.5)
            return answer
        return lasting.handle(event)

    gateway.handler = handle
    config = parse_config(apigw_raw(tmp_path, tls, gateway), environ={})
    clip = os.urandom(11 * MiB)
    stats = await relay_delivers(config, tls, clip)
    assert stats.retries_by_reason["RequestExpired"] == 1
    assert await object_bytes(s3, bucket, f"{DEVICE}/{FILENAME}") == clip


async def test_random_kills_through_the_gateway_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    # Clips of 20 kB to 7 MB: POSTs, and hand-offs in two parts, cut at random moments.
    await kill_at_random(apigw_raw(tmp_path, tls, gateway), tmp_path, tls, s3, bucket)


async def test_a_wrong_api_key_pauses_delivery_with_the_fix_and_a_restart_with_the_key_delivers(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    config = parse_config(apigw_raw(tmp_path, tls, gateway, api_key="not-the-key"), environ={})
    clip = os.urandom(1000)
    async with running_relay(config, tls) as relay:
        assert (await relay.device.post_clip(PATH, clip)).status == 200
        await wait_until(lambda: relay.stats.destination_refusal is not None, what="delivery paused")
        _, body = await http_get(relay.metrics_url + "/healthz")
        [reason] = json.loads(body)["reasons"]
        assert relay.quarantined() == []  # the gateway refuses the relay, not the clip
    assert reason["code"] == "destination_refused"
    assert "Forbidden" in reason["message"]
    assert "apigw.api_key" in reason["fix"]
    fixed = parse_config(apigw_raw(tmp_path, tls, gateway), environ={})
    async with running_relay(fixed, tls) as relay:
        await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the waiting clip delivered")


async def test_gateway_timeout_is_retried_and_the_late_write_is_recognised(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    # The gateway gives up at its timeout; the function carries on and stores the clip.
    # The retry must find it there, not store it twice.
    gateway.integration_timeout_s = 0.3
    slow_once = threading.Event()

    def slow_first_call(resource: str) -> None:
        if not slow_once.is_set():
            slow_once.set()
            threading.Event().wait(0.6)

    gateway.before_invoke = slow_first_call
    config = parse_config(apigw_raw(tmp_path, tls, gateway), environ={})
    clip = os.urandom(500_000)
    stats = await relay_delivers(config, tls, clip)
    assert gateway.statuses[("upload", 504)] == 1
    assert stats.retries_by_reason["IntegrationTimeout"] >= 1
    assert await list_keys(s3, bucket) == [f"{DEVICE}/{FILENAME}"]
    assert await object_bytes(s3, bucket, f"{DEVICE}/{FILENAME}") == clip


async def test_an_unmapped_function_error_answered_200_is_not_a_delivery(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3: Any, bucket: str
) -> None:
    # A gateway set up without error responses answers a failed function with 200.
    gateway.rules = dataclasses.replace(gateway.rules, error_patterns=())
    failed_once = threading.Event()

    def fail_first_call(resource: str) -> None:
        if not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("Task timed out after 28.00 seconds")

    gateway.before_invoke = fail_first_call
    config = parse_config(apigw_raw(tmp_path, tls, gateway), environ={})
    clip = os.urandom(300_000)
    stats = await relay_delivers(config, tls, clip)
    assert gateway.statuses[("upload", 200)] == 2  # the false 200, then the real one
    assert stats.retries_by_reason["UnmappedLambdaError"] == 1
    assert await object_bytes(s3, bucket, f"{DEVICE}/{FILENAME}") == clip
