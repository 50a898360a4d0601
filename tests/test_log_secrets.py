"""Secrets never reach the log, whichever way a request carries them, and a flood of
malformed requests cannot fill the journal. A real relay process; its whole stderr is
searched."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from pathlib import Path

from tests.support.device import Device
from tests.support.harness import DEVICE, TLS, TOKEN, raw_config, write_config
from tests.support.relay_process import relay_process

PASSWORD = "pass-word"  # the harness's device password
BASIC = base64.b64encode(f"root:{PASSWORD}".encode()).decode()


async def send_raw(device: Device, request: bytes) -> None:
    """One request as bytes, however malformed; whatever the relay answers is read and dropped."""
    reader, writer = await device._open()
    try:
        writer.write(request)
        await writer.drain()
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_no_token_or_password_in_the_log_and_no_flood(tmp_path: Path, tls: TLS) -> None:
    raw = raw_config(tmp_path, tls, "https://127.0.0.1:1", "clips", ingest={"max_header_bytes": 2048})
    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
        device = relay.device
        # A device name that carries an encoded ?accessToken=... (clip_rejected logs the name).
        await device.request("GET", f"/upload/cam%3FaccessToken%3D{TOKEN}")
        # A request line over the header limit, token in the query (aiohttp logs the line).
        await send_raw(device, f"GET /upload/{DEVICE}?accessToken={TOKEN}&pad={'x' * 4000} HTTP/1.1\r\n\r\n".encode())
        # A character the HTTP parser refuses in the query, token beside it.
        await send_raw(device, f"GET /upload/{DEVICE}?accessToken={TOKEN}&x=\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # A character it refuses in Authorization, after Basic credentials.
        await send_raw(
            device, f"GET /upload/{DEVICE} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {BASIC}\x01\r\n\r\n".encode()
        )
        # The token under a percent-encoded name, which the HTTP library decodes to accessToken.
        await send_raw(device, f"GET /upload/{DEVICE}?access%54oken={TOKEN}&x=\x01 HTTP/1.1\r\n\r\n".encode())
        # And a flood of malformed requests.
        for _ in range(40):
            await send_raw(device, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
        assert await relay.stop() == 0
    everything = json.dumps(relay.events)
    assert TOKEN not in everything
    assert PASSWORD not in everything
    assert BASIC not in everything
    assert "<redacted>" in everything  # the leaking requests were logged, without their secrets
    library = [e for e in relay.events if e.get("logger", "").startswith("aiohttp")]
    assert len(library) <= 10  # a minute's allowance, however many malformed requests came
    assert all(len(json.dumps(e)) < 2000 for e in library)  # no multi-KB tracebacks
    # Each keeps its reason, not only the caret aiohttp puts under the fault.
    assert all(e["exception"].split(": ", 1)[1].strip("^ ") for e in library if "exception" in e)
    assert any("access%54oken=<redacted>" in e.get("exception", "") for e in library)


def test_the_relays_own_sentences_are_not_taken_for_credentials() -> None:
    from relay.ops.logs import redact

    for sentence in (
        "the password is stored hashed, which Digest cannot use; use Basic",
        "malformed Basic credentials",
        "Digest without qop=auth",
        "Digest nonce expired",
    ):
        assert redact(sentence) == sentence
    assert redact(f"Authorization: Basic {BASIC}") == "Authorization: Basic <redacted>"
    assert redact('Digest username="root", response="9f8e"') == "Digest <redacted>"
