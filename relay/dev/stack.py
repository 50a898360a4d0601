"""`make run`: the relay plus an embedded S3-compatible server, on one machine.

For trying the relay with a real device or curl before any AWS account is involved.
Everything lives under one state directory (default ``.dev/``): the S3 server's data,
the relay's spool, a self-signed TLS certificate and the demo device's token.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
from pathlib import Path

import aioboto3
from botocore.exceptions import ClientError

from relay.config import RelayConfig, parse_config
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3
from relay.ops import certs
from relay.server import serve

DEVICE = "demo-camera"
BUCKET = "axis-clips"


def _addresses() -> list[str]:
    names = {"127.0.0.1", "localhost", socket.gethostname()}
    with contextlib.suppress(OSError):
        names |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    return sorted(names)


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


def dev_config(state: Path, endpoint_url: str, port: int) -> RelayConfig:
    cert, key = _certificate(state)
    return parse_config(
        {
            "ingest": {"host": "0.0.0.0", "port": port, "tls_cert": str(cert), "tls_key": str(key)},
            "spool": {"dir": str(state / "spool")},
            "s3": {
                "bucket": BUCKET,
                "endpoint_url": endpoint_url,
                "addressing_style": "path",
                "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY,
            },
            "devices": {DEVICE: {"token": _token(state)}},
        },
        environ={},
    )


async def _create_bucket(endpoint_url: str) -> None:
    session = aioboto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    async with session.client("s3", endpoint_url=endpoint_url) as client:
        try:
            await client.create_bucket(Bucket=BUCKET)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


def _banner(config: RelayConfig, endpoint_url: str, state: Path) -> str:
    token = _token(state)
    port = config.ingest.port
    hosts = [a for a in _addresses() if a[0].isdigit() and not a.startswith("127.")] or ["<this-host>"]
    return f"""
axis-relay is running (dev mode: embedded S3 at {endpoint_url}, bucket '{BUCKET}').

Recipient for an AXIS device (Settings > System > Events > Recipients, type HTTPS,
turn "Validate server certificate" off, or install {state}/tls/ca.crt on the device):
    https://{hosts[0]}:{port}/upload/{DEVICE}?accessToken={token}

Send a test clip from this machine:
    head -c 5000000 /dev/urandom > /tmp/test.mkv
    curl --cacert {state}/tls/ca.crt -H 'Content-Type: video/x-matroska' \\
      -H 'Content-Disposition: attachment; filename="test.mkv"' --data-binary @/tmp/test.mkv \\
      'https://localhost:{port}/upload/{DEVICE}?accessToken={token}'

Each clip logs 'clip_accepted' when it is safe on disk and 'clip_uploaded' once
S3 has it. Stop with Ctrl-C.
"""


async def run(state: Path, port: int) -> None:
    state.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    local = LocalS3(data_dir=(state / "s3").resolve())
    async with local.running():
        await _create_bucket(local.endpoint_url)
        config = dev_config(state, local.endpoint_url, port)
        await serve(
            config, stop.wait, on_started=lambda _: print(_banner(config, local.endpoint_url, state), flush=True)
        )
