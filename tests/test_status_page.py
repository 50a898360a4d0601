"""The status page (GET / on the metrics listener), rendered by headless Chromium
(Debian's chromium package): it renders, a screenshot is taken, and the DOM shows the
camera that just sent a clip."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp

from relay.dev.local_s3 import LocalS3
from tests.support.browser import chromium
from tests.support.harness import DEVICE, PATH, TLS, RunningRelay, relay_config, running_relay, wait_until


async def test_the_page_renders_and_shows_the_camera_that_just_sent_a_clip(relay: RunningRelay, tmp_path: Path) -> None:
    assert (await relay.device.post_clip(PATH, b"x" * 2000)).status == 200
    await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the clip uploaded")
    url = relay.metrics_url + "/"
    dom = (await chromium("--dump-dom", url, profile=tmp_path / "profile")).decode()
    row = re.search(rf"<tr data-camera=\"{DEVICE}\".*?</tr>", dom, re.S)
    assert row, dom[:2000]
    cells = dict(re.findall(r'<td data-field="(\w+)">([^<]*)', row.group(0)))
    assert cells["today"] == "1"
    assert cells["waiting"] == "0"
    assert re.fullmatch(r"\d+ s ago", cells["last"]), cells
    assert cells["tls"] == "0"
    assert 'data-status="ok"' in dom
    assert ">OK<" in dom
    assert 'href="/metrics"' in dom
    assert 'href="/healthz"' in dom
    assert "last upload " in dom
    assert "- s ago" not in dom
    shot = tmp_path / "status.png"
    await chromium(f"--screenshot={shot}", "--window-size=1200,700", url, profile=tmp_path / "profile")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


async def test_the_page_is_read_only_self_contained_and_refreshes(relay: RunningRelay) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(relay.metrics_url + "/") as answer:
            assert answer.status == 200
            assert answer.content_type == "text/html"
            text = await answer.text()
        async with session.post(relay.metrics_url + "/", data=b"x") as refused:
            assert refused.status == 405
    assert '<meta http-equiv="refresh"' in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # no external assets
    assert f"data-camera='{DEVICE}'" in text


async def test_the_page_shows_failing_and_degraded_with_their_reasons(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    """A wrong secret key (failing) and a camera that does not trust the relay (degraded),
    as Chromium renders them: the badge's word and colour, each reason with its fix."""
    devices = {DEVICE: {"token": "tok-3c1d2e9f", "address": "127.0.0.1"}}
    config = relay_config(
        tmp_path, tls, s3_server.endpoint_url, bucket, s3={"secret_access_key": "wrong"}, devices=devices
    )
    async with running_relay(config, tls) as relay:
        url = relay.metrics_url + "/"
        assert (await relay.device.post_clip(PATH, b"x" * 1000)).status == 200
        await wait_until(lambda: relay.stats.destination_refusal is not None, what="the refusal")
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sS", f"https://127.0.0.1:{relay.port}/", stderr=asyncio.subprocess.DEVNULL
        )
        assert await curl.wait() == 60
        await wait_until(lambda: bool(relay.stats.tls_trouble), what="the camera's TLS trouble")
        dom = (await chromium("--dump-dom", url, profile=tmp_path / "profile")).decode()
    badge = re.search(r'<span class="state" id="health" data-status="(\w+)" style="background:([^"]+)">(\w+)<', dom)
    assert badge, dom[:1500]
    assert badge.groups() == ("failing", "#c62828", "FAILING")
    reasons = dict(re.findall(r"<li data-code=\"(\w+)\" class=\"(\w+)\">", dom))
    assert reasons == {"destination_refused": "failing", "tls_handshake_failing": "degraded"}
    assert "Fix: correct the AWS secret key" in dom or "Fix: correct the AWS access key" in dom
    assert "install the relay's CA" in dom
    row = re.search(rf"<tr data-camera=\"{DEVICE}\" class=\"warn\">.*?</tr>", dom, re.S)
    assert row, dom[:2000]
    assert '<td data-field="tls">1</td>' in row.group(0)
    assert '<td data-field="waiting">1</td>' in row.group(0)
    assert f"s3://{bucket}" in dom
