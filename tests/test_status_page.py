"""The status page (GET / on the metrics listener), rendered by headless Chromium
(Debian's chromium package): it renders, a screenshot is taken, and the DOM shows the
camera that just sent a clip."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import aiohttp

from tests.support.harness import DEVICE, PATH, RunningRelay, wait_until


async def chromium(*args: str, profile: Path) -> bytes:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs Debian's chromium package"
    proc = await asyncio.create_subprocess_exec(
        binary,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0
    return out


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
    assert re.fullmatch(r"0:00:\d\d ago", cells["last"]), cells
    assert 'id="health"' in dom
    assert ">OK<" in dom
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
