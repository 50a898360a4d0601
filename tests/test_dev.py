"""`make run` (`axis-relay dev`): with 8443 and 9108 taken (a second instance, anything
else), it takes free ports and prints them, and the recipient URL names this machine's
LAN addresses, read from its interfaces."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import ssl
import sys
from pathlib import Path

from relay.dev.addresses import lan_addresses
from relay.dev.stack import served
from relay.server import Listening
from tests.support.device import Device
from tests.support.harness import axis_relay, http_get, wait_until


async def clip_listed(cli_config: Path) -> bool:
    code, out, _ = await axis_relay("clips", "--json", "--config", str(cli_config))
    return code == 0 and any(row["state"] == "uploaded" for row in json.loads(out))


def hold(port: int, host: str) -> socket.socket | None:
    """Take a port for the test's length; None when something else already has it."""
    taken = socket.socket()
    try:
        taken.bind((host, port))
        taken.listen()
    except OSError:
        taken.close()
        return None
    return taken


async def test_dev_takes_free_ports_when_the_usual_ones_are_taken_and_prints_them(tmp_path: Path) -> None:
    held = [hold(8443, "0.0.0.0"), hold(9108, "127.0.0.1")]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "dev",
        "--state",
        str(tmp_path / "dev"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    banner = ""
    try:
        async with asyncio.timeout(90):
            while "Stop with Ctrl-C" not in banner:
                line = await proc.stdout.readline()
                assert line, f"axis-relay dev ended early:\n{banner}"
                banner += line.decode()
        port = int(re.search(r"Devices send to port (\d+)", banner).group(1))  # type: ignore[union-attr]
        metrics = re.search(r"/metrics and /healthz at (http://\S+)", banner).group(1)  # type: ignore[union-attr]
        assert port != 8443
        assert not metrics.endswith(":9108")
        recipients = re.findall(r"^    https://(\S+):(\d+)/upload/demo-camera\?accessToken=(\S+)$", banner, re.M)
        assert {host.strip("[]") for host, _, _ in recipients} == set(lan_addresses())
        assert all(not host.startswith("127.") for host, _, _ in recipients)
        token = (tmp_path / "dev" / "device-token").read_text().strip()
        assert {t for _, _, t in recipients} <= {token}
        context = ssl.create_default_context(cafile=str(tmp_path / "dev" / "tls" / "ca.crt"))
        device = Device("127.0.0.1", port, context)
        answer = await device.post_clip(f"/upload/demo-camera?accessToken={token}", b"x" * 5000)
        assert answer.status == 200
        # Every address the banner prints answers: over IPv6 too where the host has it.
        for host, printed_port, _ in recipients:
            # The very URL printed, over IPv4 and IPv6 alike (the certificate names both).
            printed = Device(host.strip("[]"), int(printed_port), context)
            assert (await printed.request("GET", f"/upload/demo-camera?accessToken={token}")).status == 200, host
        status, _ = await http_get(metrics + "/healthz")
        assert status == 200
        # The banner's CLI lines work as printed, against this relay's own config file.
        cli_config = tmp_path / "dev" / "relay.toml"
        assert f"axis-relay clips --config {cli_config}" in banner
        await wait_until(
            lambda: clip_listed(cli_config), timeout=30, what="the clip in `axis-relay clips --config .dev/relay.toml`"
        )
        assert (await axis_relay("status", "--config", str(cli_config)))[0] == 0
        # A second `make run` on the same state is refused at once, saying what to do.
        code, _, err = await axis_relay("dev", "--state", str(tmp_path / "dev"))
        assert code == 3, err
        assert f"another dev relay (PID {proc.pid}) uses" in err
        assert "--state" in err
        # The spool and the ledger are for the relay's user alone, under `make run` too.
        spool = tmp_path / "dev" / "spool"
        assert spool.stat().st_mode & 0o777 == 0o700
        assert (spool / "ledger.sqlite3").stat().st_mode & 0o777 == 0o600
        assert all(p.stat().st_mode & 0o077 == 0 for p in spool.rglob("*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        for sock in held:
            if sock is not None:
                sock.close()
    assert proc.returncode == 0


def test_the_banner_offers_ipv6_addresses_only_when_the_relay_listens_on_ipv6() -> None:
    addresses = ["192.168.1.5", "fd00::2"]
    ipv4_only = Listening(["https://0.0.0.0:8443"], [])
    both = Listening(["https://0.0.0.0:8443", "https://[::]:8443"], [])
    assert served(addresses, ipv4_only) == ["192.168.1.5"]
    assert served(addresses, both) == addresses
