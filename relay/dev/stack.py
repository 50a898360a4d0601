"""`make run`: the relay plus an embedded S3-compatible server, on one machine.

For trying the relay with a real device or curl before any AWS account is involved.
Everything lives under one state directory (default ``.dev/``): the S3 server's data,
the relay's spool, a self-signed TLS certificate and the demo device's token.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aioboto3
from botocore.exceptions import ClientError

from relay.config import RelayConfig, parse_config
from relay.dev.addresses import lan_addresses
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3, free_port
from relay.ops import certs
from relay.server import Listening, RelayError, serve
from relay.spool import lock as spool_lock

DEVICE = "demo-camera"
BUCKET = "axis-clips"


def _addresses() -> list[str]:
    return sorted({"127.0.0.1", "localhost", socket.gethostname(), *lan_addresses()})


def port_or_free(port: int, host: str = "0.0.0.0") -> int:
    """``port`` if nothing listens there, else 0 (any free one: the banner says which)."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return 0
    return port


def dual_stack_port(port: int) -> int:
    """``port`` when it is free for IPv4 and IPv6 alike, else one the kernel finds free
    for both (one socket bound to both families): the two listeners share a port."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                probe.bind(("::", port))
            except OSError:
                probe.bind(("::", 0))
            return int(probe.getsockname()[1])
    except OSError:
        return port_or_free(port) or free_port("0.0.0.0")  # no IPv6 on this host


def served(addresses: list[str], listening: Listening) -> list[str]:
    """The LAN addresses a device can reach the relay on: IPv6 ones only when it listens
    on IPv6 too (a URL the relay does not answer on is worse than none)."""
    ipv6 = any("[" in url for url in listening.ingest)
    return [a for a in addresses if ipv6 or ":" not in a]


def _certificate(state: Path) -> tuple[Path, Path]:
    """The same local CA and certificate `axis-relay gen-cert` makes for a real site."""
    paths = {"cert": state / "tls" / "relay.crt", "key": state / "tls" / "relay.key"}
    if not paths["cert"].exists():
        paths = certs.generate(state / "tls", _addresses())
    return paths["cert"], paths["key"]


def _token(state: Path) -> str:
    path = state / "device-token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def dev_config(state: Path, endpoint_url: str, port: int, metrics_port: int = 9108) -> RelayConfig:
    return parse_config(dict(dev_raw_config(state, endpoint_url, port, metrics_port)), environ={})


def dev_raw_config(state: Path, endpoint_url: str, port: int, metrics_port: int) -> dict[str, dict[str, Any]]:
    cert, key = _certificate(state)
    return {
        # Every address, IPv4 and IPv6 (where the host has it): a LAN may be either.
        "ingest": {"host": "", "port": port, "tls_cert": str(cert), "tls_key": str(key)},
        "metrics": {"port": metrics_port},
        "spool": {"dir": str(state / "spool")},
        "s3": {
            "bucket": BUCKET,
            "endpoint_url": endpoint_url,
            "addressing_style": "path",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
        },
        "devices": {DEVICE: {"token": _token(state)}},
    }


def _toml(raw: dict[str, dict[str, Any]], prefix: str = "") -> str:
    """The dev config as TOML (strings, numbers and tables only: all it holds)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in raw.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    for key, value in tables:
        name = f"{prefix}{json.dumps(key) if '-' in key else key}"
        text += f"\n[{name}]\n" + _toml(value, f"{name}.")
    return text


def write_cli_config(state: Path, endpoint_url: str, listening: Listening) -> Path:
    """`.dev/relay.toml`: the running dev relay's config with the ports it got, so every
    CLI command works against it (`axis-relay clips --config .dev/relay.toml`)."""
    ingest = int(urlsplit(listening.ingest[0]).port or 0)
    metrics = int(urlsplit(listening.metrics[0]).port or 0) if listening.metrics else 0
    raw = dev_raw_config(state, endpoint_url, ingest, metrics)
    raw["spool"]["dir"] = str((state / "spool").resolve())
    path = state / "relay.toml"
    path.write_text("# Written by `axis-relay dev` for the CLI; rewritten at every start.\n" + _toml(raw))
    path.chmod(0o600)
    return path


async def _create_bucket(endpoint_url: str) -> None:
    session = aioboto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    async with session.client("s3", endpoint_url=endpoint_url) as client:
        try:
            await client.create_bucket(Bucket=BUCKET)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


def _banner(listening: Listening, endpoint_url: str, state: Path, cli_config: Path) -> str:
    token = _token(state)
    port = int(urlsplit(listening.ingest[0]).port or 0)
    hosts = [f"[{a}]" if ":" in a else a for a in served(lan_addresses(), listening)] or ["<this-host>"]
    recipients = "\n".join(f"    https://{h}:{port}/upload/{DEVICE}?accessToken={token}" for h in hosts)
    metrics = listening.metrics[0] if listening.metrics else "(off)"
    return f"""
axis-relay is running (dev mode: embedded S3 at {endpoint_url}, bucket '{BUCKET}').
Devices send to port {port}; status page, /metrics and /healthz at {metrics}

Recipient for an AXIS device (Settings > System > Events > Recipients, type HTTPS,
turn "Validate server certificate" off, or install {state}/tls/ca.crt on the device):
{recipients}

Send a test clip from this machine:
    head -c 5000000 /dev/urandom > /tmp/test.mkv
    curl --cacert {state}/tls/ca.crt -H 'Content-Type: video/x-matroska' \\
      -H 'Content-Disposition: attachment; filename="test.mkv"' --data-binary @/tmp/test.mkv \\
      'https://localhost:{port}/upload/{DEVICE}?accessToken={token}'

Each clip logs 'clip_accepted' when it is safe on disk and 'clip_uploaded' once
S3 has it. In another terminal, every CLI command works against this relay:
    .venv/bin/axis-relay clips --config {cli_config}     # what arrived, where it went
    .venv/bin/axis-relay status --config {cli_config}    # its verdict: ok, degraded, failing
The bucket itself, with the AWS CLI:
    AWS_ACCESS_KEY_ID={ACCESS_KEY} AWS_SECRET_ACCESS_KEY={SECRET_KEY} \\
      aws --endpoint-url {endpoint_url} s3 ls s3://{BUCKET} --recursive
Stop with Ctrl-C.
"""


async def run(state: Path, port: int) -> None:
    state.mkdir(parents=True, exist_ok=True)
    # Before the S3 server starts: a second `make run` on the same state would share the
    # spool, and the relay refuses that anyway; say what to do instead.
    if pid := spool_lock.holder(state / "spool"):
        raise RelayError(
            f"another dev relay (PID {pid}) uses {state}: stop it first, or give this one a state directory of "
            f"its own: .venv/bin/axis-relay dev --state {state}-2"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    local = LocalS3(data_dir=(state / "s3").resolve())
    async with local.running():
        await _create_bucket(local.endpoint_url)
        # The usual ports when they are free; any free ones when not (a second instance,
        # or anything else on 8443 or 9108): the banner says which.
        config = dev_config(state, local.endpoint_url, dual_stack_port(port), port_or_free(9108, "127.0.0.1"))

        def started(where: Listening) -> None:
            cli_config = write_cli_config(state, local.endpoint_url, where)
            print(_banner(where, local.endpoint_url, state, cli_config), flush=True)

        await serve(config, stop.wait, on_started=started)
