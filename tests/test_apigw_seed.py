"""The API Gateway path against the seed's own function, behind the seed's mapping template.

The function (tests/support/seed_function.py) reads only what the seed's
lambda_handler.js reads; the stand-in applies the "method request passthrough"
template. Cameras must land in their own folders, the relay must claim no key it was
not told, and a function that stores nothing must not pass unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from relay.config import parse_config
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3
from relay.ledger import Ledger
from relay.upload.apigw import VERIFIED_FILE
from tests.support.apigw_standin import API_KEY, ApiGatewayStandIn, apigw_raw
from tests.support.harness import (
    DEVICE,
    PATH,
    TLS,
    axis_relay,
    list_keys,
    object_bytes,
    running_relay,
    wait_until,
    write_config,
)
from tests.support.seed_function import SeedFunction

FILENAME = "video23-04-13_21-50-27-63_00007.mkv"


@pytest.fixture
async def seed_gateway(function_s3: Any, bucket: str, tls: TLS) -> AsyncIterator[ApiGatewayStandIn]:
    """The seed's function with its upload exported (the fix its README implies)."""
    seed = SeedFunction(function_s3, bucket, exported_upload=True)
    async with ApiGatewayStandIn(seed, tls.cert_file, tls.key_file, api_keys=frozenset({API_KEY})).running() as g:
        yield g


@pytest.fixture
async def published_seed_gateway(function_s3: Any, bucket: str, tls: TLS) -> AsyncIterator[ApiGatewayStandIn]:
    """The seed's function as published: its exported handler only logs."""
    seed = SeedFunction(function_s3, bucket, exported_upload=False)
    async with ApiGatewayStandIn(seed, tls.cert_file, tls.key_file, api_keys=frozenset({API_KEY})).running() as g:
        yield g


def seed_raw(tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, s3_server: LocalS3, bucket: str) -> dict[str, Any]:
    """No hand-off (the seed has none); an [s3] section that can read the function's bucket."""
    raw = apigw_raw(
        tmp_path,
        tls,
        gateway,
        s3={
            "bucket": bucket,
            "endpoint_url": s3_server.endpoint_url,
            "ca_bundle": str(tls.ca_file),
            "addressing_style": "path",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
        },
    )
    del raw["apigw"]["handoff_url"]
    return raw


async def apigw_check(config_file: Path) -> tuple[int, str]:
    code, out, err = await axis_relay("apigw", "check", "--config", str(config_file))
    return code, out + err


async def test_each_camera_lands_in_its_own_folder_and_only_a_known_key_is_claimed(
    tmp_path: Path, tls: TLS, seed_gateway: ApiGatewayStandIn, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    config = parse_config(seed_raw(tmp_path, tls, seed_gateway, s3_server, bucket), environ={})
    clip = os.urandom(100_000)
    with structlog.testing.capture_logs() as logs:
        async with running_relay(config, tls) as relay:
            assert (await relay.device.post_clip(PATH, clip, filename=FILENAME)).status == 200
            await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the clip POSTed")
    # The camera reached the function as a header: its folder, not default_folder/.
    assert await list_keys(s3, bucket) == [f"{DEVICE}/{FILENAME}"]
    assert await object_bytes(s3, bucket, f"{DEVICE}/{FILENAME}") == clip
    # The seed's function answers no key: the relay says the endpoint decided, and
    # the ledger records the route and no key.
    [uploaded] = [e for e in logs if e["event"] == "clip_uploaded"]
    assert "key" not in uploaded
    assert uploaded["key_decided_by"] == "the endpoint"
    assert uploaded["route"] == "post"
    ledger = Ledger.open_readonly(config.ledger_path)
    try:
        [row] = ledger.clips.find()
    finally:
        ledger.close()
    assert (row.state, row.route, row.key) == ("uploaded", "post", None)


async def test_a_function_that_stores_nothing_is_warned_about_once_and_caught_by_the_check(
    tmp_path: Path, tls: TLS, published_seed_gateway: ApiGatewayStandIn, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    raw = seed_raw(tmp_path, tls, published_seed_gateway, s3_server, bucket)
    config_file = write_config(tmp_path / "relay.toml", raw)
    with structlog.testing.capture_logs() as logs:
        async with running_relay(parse_config(raw, environ={}), tls) as relay:
            for n in range(3):
                assert (await relay.device.post_clip(PATH, os.urandom(1000), filename=f"c{n}.mkv")).status == 200
            await wait_until(lambda: relay.stats.clips_uploaded == 3, what="three 200s from the gateway")
    # The relay cannot tell a bare 200 from a delivery, but it says so, once.
    [warning] = [e for e in logs if e["event"] == "apigw_unverified_acknowledgement"]
    assert warning["log_level"] == "warning"
    assert "apigw check" in warning["fix"]
    assert await list_keys(s3, bucket) == []  # indeed nothing was stored
    code, out = await apigw_check(config_file)
    assert code == 1, out
    assert "stored nothing" in out
    assert "NOT VERIFIED" in out
    assert not (Path(raw["spool"]["dir"]) / VERIFIED_FILE).exists()


async def test_the_check_verifies_a_working_path_and_silences_the_warning(
    tmp_path: Path, tls: TLS, seed_gateway: ApiGatewayStandIn, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    raw = seed_raw(tmp_path, tls, seed_gateway, s3_server, bucket)
    code, out = await apigw_check(write_config(tmp_path / "relay.toml", raw))
    assert code == 0, out
    assert "arrived, byte for byte, as axis-relay-check/check-" in out
    [key] = await list_keys(s3, bucket)
    assert key.startswith("axis-relay-check/")
    assert (Path(raw["spool"]["dir"]) / VERIFIED_FILE).exists()
    # The same URL, now answering a bare 200 (say, the function was redeployed wrong):
    # the path was verified, so the relay does not warn.
    assert isinstance(seed_gateway.handler, SeedFunction)
    seed_gateway.handler._exported_upload = False
    with structlog.testing.capture_logs() as logs:
        async with running_relay(parse_config(raw, environ={}), tls) as relay:
            assert (await relay.device.post_clip(PATH, os.urandom(1000))).status == 200
            await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the 200")
    assert not [e for e in logs if e["event"] == "apigw_unverified_acknowledgement"]


async def test_the_check_says_when_it_cannot_verify(
    tmp_path: Path, tls: TLS, seed_gateway: ApiGatewayStandIn, s3_server: LocalS3, bucket: str
) -> None:
    raw = seed_raw(tmp_path, tls, seed_gateway, s3_server, bucket)
    del raw["s3"]  # no way to look into the bucket, and no hand-off
    code, out = await apigw_check(write_config(tmp_path / "relay.toml", raw))
    assert code == 1
    assert "delivery could not be verified" in out


async def test_the_check_finds_a_function_that_ignores_the_camera(
    tmp_path: Path, tls: TLS, function_s3: Any, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    class CameraBlind(SeedFunction):
        """The seed's function as a relay that sends the camera only in the query meets it."""

        def __call__(self, event: dict[str, Any]) -> dict[str, Any] | None:
            event["headers"].pop("subfolder", None)
            return super().__call__(event)

    blind = CameraBlind(function_s3, bucket, exported_upload=True)
    async with ApiGatewayStandIn(blind, tls.cert_file, tls.key_file, api_keys=frozenset({API_KEY})).running() as g:
        code, out = await apigw_check(
            write_config(tmp_path / "relay.toml", seed_raw(tmp_path, tls, g, s3_server, bucket))
        )
    assert code == 1
    assert "default_folder/" in out
    assert "overwrite each other" in out
