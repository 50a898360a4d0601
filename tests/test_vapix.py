"""The VAPIX client against the emulated camera over real HTTPS: Digest as devices ask
for it, the calls back-fill makes, and every documented way a camera says no."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from relay.camera.answers import CameraError
from relay.camera.vapix import VapixClient
from relay.config import CameraConfig
from tests.support.footage import frames_between, frames_in
from tests.support.harness import TLS, serving_app
from tests.support.vapix_camera import CameraEmulator


def client_config(camera: CameraEmulator, tls: TLS, **overrides: object) -> CameraConfig:
    fields: dict[str, object] = {
        "url": camera.url,
        "username": camera.username,
        "password": SecretStr(camera.password),
        "ca_bundle": tls.ca_file,
        "expect": "continuous",
        "timeout_s": 2.0,
    }
    fields.update(overrides)
    return CameraConfig.model_validate(fields)


async def test_device_facts_clock_and_disk(camera: CameraEmulator, tls: TLS) -> None:
    camera.clock_offset_s = 90.0
    camera.ntp_synced = False
    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        info = await client.device_info()
        clock = await client.clock()
        [disk] = await client.disks()
    assert info["SerialNumber"] == camera.serial
    assert info["ProdNbr"] == "P3245-V"
    assert clock.synced is False
    # Measured from the camera's Date header: whole seconds, so within a second or so.
    assert clock.offset_s is not None
    assert 88.5 <= clock.offset_s <= 91.5
    assert (disk.disk_id, disk.status, disk.cleanup_max_age_days, disk.usable) == ("SD_DISK", "OK", 1, True)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_a_stale_nonce_is_a_new_nonce_not_a_wrong_password(
    camera: CameraEmulator, tls: TLS, algorithm: str
) -> None:
    camera.algorithm = algorithm
    camera.nonce_max_uses = 2
    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        for _ in range(5):
            await client.device_info()
    assert camera.stale_answers >= 2
    assert camera.auth_failures == 0
    assert [path for path, _ in camera.calls].count("/axis-cgi/basicdeviceinfo.cgi") == 5


async def test_basic_only_when_the_camera_offers_nothing_else(camera: CameraEmulator, tls: TLS) -> None:
    camera.offer_digest, camera.offer_basic = False, True
    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        assert (await client.device_info())["SerialNumber"] == camera.serial
    camera.offer_digest = True  # offered both: Digest is the one answered
    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        await client.device_info()
    assert camera.auth_failures == 0


async def test_wrong_password_is_named_and_not_transient(camera: CameraEmulator, tls: TLS) -> None:
    config = client_config(camera, tls, password=SecretStr("not-the-password"))
    async with VapixClient.open("cam", config) as client:
        with pytest.raises(CameraError) as caught:
            await client.disks()
    assert not caught.value.transient
    assert "wrong username or password" in caught.value.reason
    assert "not-the-password" not in str(caught.value)


async def test_recordings_are_paged_and_sorted_oldest_first(camera: CameraEmulator, tls: TLS) -> None:
    camera.split_s = 1.0
    begin = camera.now() - timedelta(seconds=250)
    camera.record(begin, begin + timedelta(seconds=230))
    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        found = await client.recordings("SD_DISK", begin - timedelta(seconds=1), begin + timedelta(seconds=300))
    assert len(found) == 230  # three pages of 100
    assert [r.starts for r in found] == sorted(r.starts for r in found)
    pages = [q for path, q in camera.calls if path.endswith("record/list.cgi")]
    assert [q["startatresultnumber"] for q in pages] == ["0", "100", "200"]


async def test_export_streams_the_range_from_the_key_frame_before(camera: CameraEmulator, tls: TLS) -> None:
    begin = camera.now().replace(microsecond=0) - timedelta(seconds=60)
    camera.record(begin)
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        [recording] = await client.recordings("SD_DISK", begin, begin + timedelta(seconds=30))
        asked = (begin + timedelta(seconds=10.5), begin + timedelta(seconds=20))
        export = await client.export(recording, *asked, sink)
    data = b"".join(chunks)
    assert export.bytes == len(data)
    assert frames_in(data, camera.name) == set(
        frames_between(begin + timedelta(seconds=10), asked[1], snap_to_key=False)
    )


@pytest.mark.parametrize(
    ("code", "transient", "words"),
    [(110, False, "not found"), (10, True, "processing"), (150, False, "outside the recording")],
)
async def test_a_200_with_an_xml_error_is_an_error(
    camera: CameraEmulator, tls: TLS, code: int, transient: bool, words: str
) -> None:
    camera.record(camera.now() - timedelta(seconds=60))
    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        [recording] = await client.recordings("SD_DISK", camera.now() - timedelta(seconds=30), camera.now())
        camera.xml_error = code
        stored: list[bytes] = []

        async def sink(chunk: bytes) -> None:
            stored.append(chunk)

        with pytest.raises(CameraError) as caught:
            await client.export(recording, camera.now() - timedelta(seconds=20), camera.now(), sink)
    assert stored == []  # not a byte of the error taken for footage
    assert caught.value.code == code
    assert caught.value.transient is transient
    reason = caught.value.reason.lower()
    assert f"error {code}" in reason
    assert words in reason


async def test_an_export_cut_off_half_way_is_a_transient_error(camera: CameraEmulator, tls: TLS) -> None:
    camera.record(camera.now() - timedelta(seconds=60))
    camera.cut_exports = 1
    got = 0

    async def sink(chunk: bytes) -> None:
        nonlocal got
        got += len(chunk)

    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        [recording] = await client.recordings("SD_DISK", camera.now() - timedelta(seconds=30), camera.now())
        with pytest.raises(CameraError) as caught:
            await client.export(recording, camera.now() - timedelta(seconds=30), camera.now(), sink)
    assert caught.value.transient
    assert "broke off" in caught.value.reason
    assert got > 0


async def test_unreachable_and_silent_cameras_time_out_as_transient(camera: CameraEmulator, tls: TLS) -> None:
    camera.down = True
    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        with pytest.raises(CameraError) as cut:
            await client.disks()
    assert cut.value.transient
    assert "unreachable" in cut.value.reason

    # A camera that accepts the connection and never answers: the call's deadline ends it.
    release = asyncio.Event()
    handlers: list[asyncio.Task[None] | None] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())
        await reader.read(1 << 16)
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = client_config(camera, tls, url=f"http://127.0.0.1:{port}", ca_bundle=None, timeout_s=0.5)
    try:
        async with VapixClient.open("cam", config) as client:
            with pytest.raises(CameraError) as timed_out:
                await client.disks()
    finally:
        release.set()
        server.close()
        await asyncio.gather(*(t for t in handlers if t is not None))
        await server.wait_closed()
    assert timed_out.value.transient
    assert "unreachable" in timed_out.value.reason
    assert "Timeout" in timed_out.value.reason


async def test_nonsense_is_named(camera: CameraEmulator, tls: TLS) -> None:
    from aiohttp import web

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(text="<html>proxy error</html", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", garbage)
    async with serving_app(app) as url:
        config = client_config(camera, tls, url=url, ca_bundle=None)
        async with VapixClient.open("cam", config) as client:
            with pytest.raises(CameraError) as caught:
                await client.disks()
            with pytest.raises(CameraError) as json_caught:
                await client.device_info()
    assert caught.value.transient
    assert "nonsense" in caught.value.reason
    assert json_caught.value.transient
    assert "not JSON" in json_caught.value.reason


async def test_a_listing_pages_by_its_matches_and_sends_whole_seconds(camera: CameraEmulator, tls: TLS) -> None:
    """The card holds many recordings, the range matches one: one list.cgi call, not a
    second page asked for because totalnumberofrecordings counts the whole card. Times
    go in a documented form (whole seconds; the emulator refuses six fraction digits,
    which no device is known to take), the range floored and ceiled around the one meant."""
    camera.split_s = 10.0
    begin = camera.now().replace(microsecond=0) - timedelta(seconds=200)
    camera.record(begin, begin + timedelta(seconds=150))
    asked = (begin + timedelta(seconds=71.4), begin + timedelta(seconds=78.6))
    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        [found] = await client.recordings("SD_DISK", *asked)
    [listing] = [q for path, q in camera.calls if path.endswith("record/list.cgi")]
    assert found.starts == begin + timedelta(seconds=70)
    assert listing["starttime"] == f"{begin + timedelta(seconds=71):%Y-%m-%dT%H:%M:%S}Z"
    assert listing["stoptime"] == f"{begin + timedelta(seconds=79):%Y-%m-%dT%H:%M:%S}Z"


@pytest.mark.parametrize(
    "form",
    [
        {"algorithm": "MD5-sess"},
        {"challenge_qop": False},  # RFC 2069's answer: no qop, nc or cnonce
        {"opaque": "5ccc069c403ebaf9f0171e9517f40e41"},
        {"challenge_names_algorithm": False},  # MD5 by default
        {"algorithm": "SHA-256"},
    ],
    ids=["md5-sess", "no-qop", "opaque", "no-algorithm", "sha-256"],
)
async def test_every_digest_challenge_form_a_camera_sends_is_answered(
    camera: CameraEmulator, tls: TLS, form: dict[str, Any]
) -> None:
    for name, value in form.items():
        setattr(camera, name, value)
    async with VapixClient.open("cam", client_config(camera, tls)) as client:
        assert [d.disk_id for d in await client.disks()] == ["SD_DISK"]
        await client.disks()  # the same nonce again, counted
    assert camera.auth_failures == 0
