"""Under systemd the relay logs through journald's native protocol: a real unix datagram
socket stands in for journald, and the relay is a real process whose stderr is the
"journal stream" (JOURNAL_STREAM names its device and inode, as systemd sets it)."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay.ops import journal
from tests.support.device import Device
from tests.support.harness import PATH, TLS, axis_relay_command, list_keys, raw_config, wait_until, write_config


def parse(datagram: bytes) -> dict[str, str]:
    """journald's native protocol, read independently of the relay's writer."""
    fields, at = {}, 0
    while at < len(datagram):
        line_end = datagram.index(b"\n", at)
        line = datagram[at:line_end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode()
            at = line_end + 1
        else:
            (length,) = struct.unpack("<Q", datagram[line_end + 1 : line_end + 9])
            start = line_end + 9
            fields[line.decode()] = datagram[start : start + length].decode()
            assert datagram[start + length : start + length + 1] == b"\n"
            at = start + length + 1
    return fields


class FakeJournald:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, str]] = []
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.setblocking(False)

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.entries.append(parse(await loop.sock_recv(self._socket, 1 << 20)))

    def events(self, name: str) -> list[dict[str, str]]:
        return [e for e in self.entries if e.get("EVENT") == name]

    def close(self) -> None:
        self._socket.close()


@pytest.fixture
async def journald(tmp_path: Path) -> AsyncIterator[FakeJournald]:
    fake = FakeJournald(tmp_path / "journal.socket")
    task = asyncio.create_task(fake.collect())
    yield fake
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    fake.close()


def test_the_protocol_carries_newlines_and_names_fields_safely() -> None:
    fields = {"MESSAGE": "two\nlines", "PRIORITY": "4", "CAMERA": "cam-1"}
    assert parse(journal.encode(fields)) == fields
    assert journal.field_name("clip_id") == "CLIP_ID"
    assert journal.field_name("_private") == "PRIVATE"  # fields starting with _ are journald's own
    assert journal.field_name("2fa") == "F_2FA"
    made = journal.fields_of(
        {"event": "clip_uploaded", "key": "cam/2026/11/28/x.mkv", "bytes": 8_000_000, "seconds": 0.4, "attempts": 1},
        "info",
    )
    assert made["MESSAGE"] == "clip uploaded: cam/2026/11/28/x.mkv, 8.0 MB in 0.4 s, 1 attempt"
    assert (made["PRIORITY"], made["EVENT"], made["KEY"]) == ("6", "clip_uploaded", "cam/2026/11/28/x.mkv")


async def test_a_relay_under_systemd_logs_fields_priorities_and_sentences(
    tmp_path: Path, tls: TLS, s3_server: Any, bucket: str, s3: Any, journald: FakeJournald
) -> None:
    raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    config = write_config(tmp_path / "relay.toml", raw)
    stderr = open(tmp_path / "stderr", "wb")  # noqa: SIM115 - the child's stderr for its whole life
    st = os.fstat(stderr.fileno())
    env = {
        **os.environ,
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        "AXIS_RELAY_JOURNAL_SOCKET": str(journald.path),
    }
    proc = await asyncio.create_subprocess_exec(
        *axis_relay_command("run", "--config", str(config)), stderr=stderr, env=env
    )
    try:
        await wait_until(
            lambda: bool(journald.events("relay_started")), timeout=60, what="relay_started in the journal"
        )
        [started] = journald.events("relay_started")
        port = int(json.loads(started["LISTEN"])[0].rsplit(":", 1)[1])
        device = Device("127.0.0.1", port, tls.client_context())
        assert (await device.post_clip(PATH, b"x" * 1000)).status == 200
        wrong = PATH.split("accessToken=")[0] + "accessToken=not-the-token-93f1"
        assert (await device.post_clip(wrong, b"y")).status in (401, 404)

        async def uploaded() -> bool:
            return bool(journald.events("clip_uploaded")) and bool(await list_keys(s3, bucket))

        await wait_until(uploaded, what="clip_uploaded in the journal")
        await wait_until(lambda: bool(journald.events("clip_rejected")), what="clip_rejected in the journal")
        # The token under a percent-encoded name (the HTTP library decodes it to
        # accessToken), in a request line the parser refuses: logged by aiohttp, verbatim.
        reader, writer = await device._open()
        writer.write(b"GET /upload/cam-entrance?access%54oken=encoded-name-token-51c2&x=\x01 HTTP/1.1\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await wait_until(lambda: bool(journald.events("library_log")), what="aiohttp's record in the journal")
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        stderr.close()
    assert proc.returncode == 0

    every = journald.entries
    assert all(e["SYSLOG_IDENTIFIER"] == "axis-relay" and e["PRIORITY"].isdigit() for e in every)
    [accepted] = journald.events("clip_accepted")
    assert accepted["CAMERA"] == "cam-entrance"  # journalctl CAMERA=cam-entrance finds it
    assert accepted["CLIP_ID"]
    assert accepted["PRIORITY"] == "6"
    assert accepted["MESSAGE"].startswith("clip received from cam-entrance: video23-04-13_21-50-27-63_00001.mkv")
    [up] = journald.events("clip_uploaded")
    assert up["MESSAGE"].startswith(f"clip uploaded: {up['KEY']}, 1.0 kB in ")
    assert up["MESSAGE"].endswith("1 attempt")
    [rejected] = journald.events("clip_rejected")
    assert rejected["PRIORITY"] == "4"  # journalctl -p warning shows it, and not the uploads
    assert "not-the-token-93f1" not in json.dumps(every)  # a secret sent never reaches the journal
    assert "encoded-name-token-51c2" not in json.dumps(every)
    [library] = journald.events("library_log")
    assert "access%54oken=<redacted>" in library["MESSAGE"]  # the line is kept, the secret is not
    assert [e["PRIORITY"] for e in every if int(e["PRIORITY"]) <= 4 and e["EVENT"] != "library_log"] == ["4"]
    [stopped] = journald.events("relay_stopped")
    assert stopped["MESSAGE"].startswith("relay stopped after ")
    # Nothing went to stderr as lines: the journal had it all.
    assert (tmp_path / "stderr").read_bytes() == b""


def test_every_log_event_names_its_camera_camera() -> None:
    """One field name for the camera in every event (journalctl CAMERA=... finds all of a
    camera's lines): no log call in the relay passes ``device=``."""
    offenders = []
    for path in sorted((Path(__file__).resolve().parents[1] / "relay").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "log"):
                continue
            named: set[object] = {k.arg for k in node.keywords}
            for k in node.keywords:
                if k.arg is None and isinstance(k.value, ast.Dict):
                    named |= {key.value for key in k.value.keys if isinstance(key, ast.Constant)}
            if "device" in named:
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_the_console_form_is_for_people_local_time_sizes_no_colour_in_a_pipe() -> None:
    script = (
        "import structlog; from relay.ops import logs; logs.configure('console', 'info'); "
        "structlog.get_logger('relay').info('clip_accepted', camera='cam-1', bytes=7512345, queued_bytes=1500)"
    )
    env = {**os.environ, "TZ": "Asia/Tokyo"}  # a zone far from UTC: the time shown must be local
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    line = result.stderr.strip()
    assert "\x1b[" not in line  # a pipe, not a terminal: no colour codes
    assert "bytes='7.5 MB'" in line
    assert "queued_bytes='1.5 kB'" in line
    shown = datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S")
    tokyo = datetime.now(UTC) + timedelta(hours=9)
    assert abs((tokyo.replace(tzinfo=None) - shown).total_seconds()) < 120, line
