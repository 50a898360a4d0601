"""Habits the suite keeps: asyncio debug mode on, and no dev-only code in `axis-relay run`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.harness import TLS, raw_config, write_config
from tests.support.relay_process import relay_process

DEV_ONLY = ("relay.dev", "trustme", "pytest", "tomli_w", "yaml")


async def test_the_suite_runs_in_asyncio_debug_mode() -> None:
    # pyproject.toml: asyncio_debug = true. In debug mode a non-thread-safe call from a
    # worker thread raises instead of working by accident.
    assert asyncio.get_running_loop().get_debug()


async def test_run_imports_no_dev_only_code(tmp_path: Path, tls: TLS) -> None:
    raw = raw_config(tmp_path, tls, "https://127.0.0.1:1", "clips")
    # -X importtime: every module the process imports is named on stderr.
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context(), env=env) as relay:
        assert relay.env["PYTHONASYNCIODEBUG"] == "1"
        assert await relay.stop() == 0
    imported = [e["line"].rsplit("|", 1)[-1].strip() for e in relay.named("raw") if "import time" in e["line"]]
    assert "relay.server" in imported  # the import log is really there
    assert [m for m in imported if m.split(".")[0] in DEV_ONLY or m.startswith("relay.dev")] == []
