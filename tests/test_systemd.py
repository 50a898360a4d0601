"""systemd integration: the notify protocol on a real datagram socket, and the unit file."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import structlog

from relay.cli.errors import CliError
from relay.cli.run import _until_stopped as until_stopped
from relay.config import parse_config
from relay.dev.local_s3 import LocalS3
from relay.ops.systemd import Notifier, keep_informed
from relay.server import RelayError, RelayFailed
from tests.support.harness import PATH, TLS, raw_config, running_relay, wait_until, write_config
from tests.support.relay_process import relay_process

UNIT = Path(__file__).parent.parent / "systemd" / "axis-relay.service"


async def test_ready_status_and_watchdog_reach_notify_socket(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    messages: list[str] = []

    def drain() -> None:
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                return

    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
    config = write_config(tmp_path / "relay.toml", raw)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(sock.close)
        relay = await stack.enter_async_context(relay_process(config, tls.client_context(), env=env))

        def seen(prefix: str, count: int = 1) -> bool:
            drain()
            return sum(1 for m in messages if prefix in m) >= count

        await wait_until(lambda: seen("READY=1"), what="READY=1")
        ready_at = next(i for i, m in enumerate(messages) if "READY=1" in m)
        assert "clip(s) queued" in messages[ready_at]
        await wait_until(lambda: seen("WATCHDOG=1", 3), what="three watchdog pings")
        device = relay.device
        assert (await device.post_clip(PATH, b"x" * 1000)).status == 200
        await wait_until(lambda: seen("1 uploaded"), what="STATUS to count the upload")
        assert await relay.stop() == 0
        await wait_until(lambda: seen("STOPPING=1"), what="STOPPING=1")


def test_notify_is_silent_without_systemd() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.send(ready="1")  # no socket: nothing happens, nothing raises


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's entry point.
    exe = Path(sys.executable).parent / "axis-relay"
    unit = tmp_path / "axis-relay.service"
    unit.write_text(UNIT.read_text().replace("/opt/axis-relay/.venv/bin/axis-relay", str(exe)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr, result.stderr
    assert "Ignoring" not in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_is_hardened() -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True, text=True)
    line = next(x for x in result.stdout.splitlines() if "Overall exposure level" in x)
    score = float(line.split(":", 1)[1].split()[0])
    assert score <= 2.0, line


async def test_watchdog_pings_stop_when_the_upload_workers_are_gone(tmp_path: Path) -> None:
    """Everything else keeps running (this loop, STATUS), yet once the workers are dead
    no WATCHDOG=1 is sent, so systemd restarts a relay that could not upload."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "100000"})
    workers = asyncio.create_task(asyncio.Event().wait(), name="upload-workers")
    informer = asyncio.create_task(keep_informed(notifier, lambda: not workers.done(), lambda: "fine"))
    pings: list[str] = []

    def received(count: int) -> bool:
        with contextlib.suppress(BlockingIOError):
            while True:
                pings.append(sock.recv(4096).decode())
        return sum("WATCHDOG=1" in m for m in pings) >= count

    try:
        await wait_until(lambda: received(3), what="three watchdog pings while the workers live")
        workers.cancel()
        # The pinger ends (within one interval), while this loop runs on: no ping follows.
        await asyncio.wait_for(informer, 5)
    finally:
        informer.cancel()
        sock.close()


async def test_a_relay_whose_upload_workers_die_exits_with_an_error(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    """Workers cancelled from outside (no exception to report) still end the relay as a
    failure, not as a clean stop."""
    config = parse_config(raw_config(tmp_path, tls, s3_server.endpoint_url, bucket), environ={})
    with structlog.testing.capture_logs() as logs:
        async with running_relay(config, tls) as relay:
            killed = [t for t in asyncio.all_tasks() if t.get_name().startswith("upload-worker-")]
            assert len(killed) == config.upload_workers
            for task in killed:
                task.cancel()
            with pytest.raises(RelayFailed, match="relay task uploader returned before shutdown"):
                await asyncio.wait_for(relay.task, 30)
    [ended] = [e for e in logs if e["event"] == "relay_task_ended"]
    assert (ended["log_level"], ended["task"], ended["why"]) == ("error", "uploader", "returned")
    assert not [e for e in logs if e["event"] == "relay_stopped"]  # not a clean stop


def test_a_failed_relay_exits_1_a_start_up_error_3() -> None:
    async def failing() -> None:
        raise RelayFailed("relay task uploader returned before shutdown")

    async def refused() -> None:
        raise RelayError("spool.dir /x is in use by another relay (PID 1)")

    with pytest.raises(CliError) as failed:
        until_stopped(failing())
    assert failed.value.code == 1
    with pytest.raises(CliError) as refusal:
        until_stopped(refused())
    assert refusal.value.code == 3


def test_a_full_notify_socket_never_blocks_the_sender(tmp_path: Path) -> None:
    """systemd busy (its socket's queue full): the message is dropped, the relay goes on."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))  # bound, never read
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})

    def flood() -> None:
        for _ in range(5000):
            notifier.send(status="x" * 200)

    sender = threading.Thread(target=flood, daemon=True)
    try:
        sender.start()
        sender.join(timeout=20)
        assert not sender.is_alive(), "send() blocked on a full socket"
    finally:
        sock.close()
