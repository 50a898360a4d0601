"""The relay as a real process, to kill with SIGKILL and start again.

Every test that runs one goes through ``relay_process()``, which closes it on every
path. The relay binds the ports its config names (0 in tests: any free one) and
reports them in ``relay_started``; ``device`` always points at the live listener,
across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.device import Device
from tests.support.harness import axis_relay_command


@contextlib.asynccontextmanager
async def relay_process(
    config_path: Path,
    client_tls: ssl.SSLContext | None,
    *,
    env: dict[str, str] | None = None,
    start: bool = True,
    nofile: int | None = None,
) -> AsyncIterator[RelayProcess]:
    """A relay process (started unless ``start`` is False), closed however the test ends;
    ``nofile`` lowers its file descriptor limit."""
    relay = RelayProcess(config_path, client_tls, env)
    relay.nofile = nofile
    try:
        if start:
            await relay.start()
        yield relay
    finally:
        await relay.close()


class RelayProcess:
    def __init__(self, config_path: Path, client_tls: ssl.SSLContext | None, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        # asyncio debug mode in the relay too, as in the suite (pyproject: asyncio_debug).
        self.env: dict[str, str] = {"PYTHONASYNCIODEBUG": "1", **(env or {})}
        self.device = Device("127.0.0.1", 0, client_tls)
        self.nofile: int | None = None
        self.metrics_url = ""
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.events = []
        self._proc = await asyncio.create_subprocess_exec(
            *axis_relay_command("run", "--config", str(self.config_path)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **self.env},
            preexec_fn=self._limits,
        )
        self._reader = asyncio.create_task(self._read(self._proc))
        started = await self.wait_for("relay_started", timeout=60)
        self.device.port = int(urlsplit(started["listen"][0]).port or 0)
        self.metrics_url = started["metrics"][0] if started["metrics"] else ""

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line.decode(errors="replace")}
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"event": "process_exited"})
            self._changed.notify_all()

    async def wait_for(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((e for e in self.events if e.get("event") == name), None)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: found() is not None or self._exited())
        event = found()
        if event is None:
            raise AssertionError(f"relay exited before {name}: {self.events[-5:]}")
        return event

    def _exited(self) -> bool:
        return any(e.get("event") == "process_exited" for e in self.events)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    async def exited(self, timeout: float = 30.0) -> int:
        """Wait for the process to end by itself (e.g. at a crash point)."""
        assert self._proc is not None
        code = await asyncio.wait_for(self._proc.wait(), timeout)
        if self._reader:
            await self._reader
        return code

    def signal(self, sig: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut or an OOM kill."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        await self._proc.wait()
        if self._reader:
            await self._reader

    def _limits(self) -> None:
        """In the child, before exec."""
        if self.nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    def restart_env(self, env: dict[str, str]) -> None:
        """The environment of the next start (crash points are set and cleared here)."""
        self.env = {"PYTHONASYNCIODEBUG": "1", **env}

    async def stop(self) -> int:
        assert self._proc is not None
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self._proc.wait(), 30)
        if self._reader:
            await self._reader
        return int(self._proc.returncode or 0)

    async def close(self) -> None:
        if self._proc and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()
        if self._reader:
            await self._reader
