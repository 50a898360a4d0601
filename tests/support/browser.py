"""Headless Chromium (Debian's chromium package) for the status page's tests: the DOM
after rendering, or a screenshot."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path


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
