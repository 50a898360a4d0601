"""What the tests share: the relay in-process, its config, S3 look-ups, bounded waits.

Nothing here mocks S3 or the relay: every test talks over real loopback sockets with
real TLS, and waits on polled states with a bound, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aioboto3
import aiohttp
import aiohttp.web
import tomli_w
import trustme
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from relay.config import RelayConfig, parse_config
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY
from relay.ops.stats import RelayStats
from relay.server import Listening, serve
from tests.support.device import Device

DEVICE = "cam-entrance"
TOKEN = "tok-3c1d2e9f"
PATH = f"/upload/{DEVICE}?accessToken={TOKEN}"


async def wait_until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.05)


@dataclass
class TLS:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def create(cls, directory: Path) -> TLS:
        """A throwaway CA and a certificate for 127.0.0.1 and localhost, as PEM files in
        ``directory`` (the suite's, and the benchmarks')."""
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(directory / "ca.pem"))
        cert.private_key_pem.write_to_path(str(directory / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
        return cls(ca, directory / "ca.pem", directory / "cert.pem", directory / "key.pem")

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def server_context(self) -> ssl.SSLContext:
        """For a test server that stands in for S3 (a TLS-terminating proxy)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def axis_relay_command(*args: str) -> list[str]:
    """The command line of `axis-relay ARGS` (the package run by this interpreter): every
    test that starts the CLI starts it through here."""
    return [sys.executable, "-m", "relay", *args]


async def axis_relay(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """`axis-relay ARGS` as an operator runs it, in a process: exit code, stdout, stderr
    (``env`` added to this process's environment; ``stdin`` typed in)."""
    proc = await asyncio.create_subprocess_exec(
        *axis_relay_command(*args),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env} if env else None,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return int(proc.returncode or 0), out.decode(), err.decode()


def axis_relay_sync(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """As ``axis_relay``, for a test that is not async."""
    return subprocess.run(axis_relay_command(*args), capture_output=True, text=True, timeout=timeout)


def s3_client(endpoint_url: str, tls: TLS | None) -> Any:
    """A client of the test S3 (over TLS with the suite's CA, or plain HTTP without)."""
    session = aioboto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    config = BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
    return session.client("s3", endpoint_url=endpoint_url, verify=str(tls.ca_file) if tls else None, config=config)


_STAMPS = re.compile(r"^\d{8}T\d{6}\.\d{6}_\d{8}T\d{6}\.\d{6}_")


def clip_name(key: str) -> str:
    """The device's file name in a key made by the default template
    ('<camera>/<day>/<start>_<end>_<file name>'), or the key's last segment."""
    return _STAMPS.sub("", key.rsplit("/", 1)[-1])


async def list_keys(s3: Any, bucket: str) -> list[str]:
    page = await s3.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in page.get("Contents", []))


async def object_bytes(s3: Any, bucket: str, key: str) -> bytes:
    answer = await s3.get_object(Bucket=bucket, Key=key)
    async with answer["Body"] as body:
        return bytes(await body.read())


async def has_object(s3: Any, bucket: str, key: str) -> bool:
    try:
        await s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


def relay_config(
    tmp_path: Path, tls: TLS, endpoint_url: str, bucket: str, *, port: int | None = None, **sections: dict[str, Any]
) -> RelayConfig:
    return parse_config(raw_config(tmp_path, tls, endpoint_url, bucket, port=port, **sections), environ={})


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(raw))
    return path


def raw_config(
    tmp_path: Path, tls: TLS, endpoint_url: str, bucket: str, *, port: int | None = None, **sections: dict[str, Any]
) -> dict[str, Any]:
    """The relay config for a test, as the dict a TOML file would hold."""
    raw: dict[str, Any] = {
        "ingest": {
            "host": "127.0.0.1",
            "port": port or 0,
            "tls_cert": str(tls.cert_file),
            "tls_key": str(tls.key_file),
            "shutdown_grace_s": 5,
        },
        # No free-space floor: the suite must pass on a nearly full disk too.
        "spool": {"dir": str(tmp_path / "spool"), "min_free_bytes": 0},
        "s3": {
            "bucket": bucket,
            "endpoint_url": endpoint_url,
            "ca_bundle": str(tls.ca_file),
            "addressing_style": "path",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "multipart_threshold_bytes": 5 * 1024 * 1024,
            "part_size_bytes": 5 * 1024 * 1024,
        },
        "metrics": {"port": 0},
        # Backoff stays on, but short, so retry paths run in test time.
        "retry": {"initial_s": 0.05, "max_s": 0.3},
        "devices": {DEVICE: {"token": TOKEN, "username": "root", "password": "pass-word"}},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


@dataclass
class RunningRelay:
    config: RelayConfig
    listening: Listening
    device: Device
    task: asyncio.Task[RelayStats]
    stop_event: asyncio.Event
    stats: RelayStats

    @property
    def port(self) -> int:
        return int(urlsplit(self.listening.ingest[0]).port or 0)

    @property
    def metrics_url(self) -> str:
        return self.listening.metrics[0]

    @property
    def spool(self) -> Path:
        return self.config.spool.dir

    def queued(self) -> list[str]:
        queue = self.spool / "queue"
        return sorted(p.name for p in queue.iterdir()) if queue.exists() else []

    def quarantined(self) -> list[str]:
        d = self.spool / "quarantine"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []

    def quarantine_reason(self, clip_id: str) -> dict[str, Any]:
        """What the quarantined clip's reason.json says."""
        reason: dict[str, Any] = json.loads((self.spool / "quarantine" / clip_id / "reason.json").read_text())
        return reason

    async def stop(self) -> RelayStats:
        self.stop_event.set()
        return await asyncio.wait_for(self.task, 30)


@contextlib.asynccontextmanager
async def running_relay(config: RelayConfig, tls: TLS, **serve_kwargs: Any) -> AsyncIterator[RunningRelay]:
    started = asyncio.Event()
    stop = asyncio.Event()
    stats = RelayStats()
    listening: list[Listening] = []

    def on_started(where: Listening) -> None:
        listening.append(where)
        started.set()

    task = asyncio.create_task(serve(config, stop.wait, on_started=on_started, stats=stats, **serve_kwargs))
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # raises what went wrong
    assert started.is_set(), "relay did not start within 30 s"
    device = Device("127.0.0.1", int(urlsplit(listening[0].ingest[0]).port or 0), tls.client_context())
    relay = RunningRelay(config, listening[0], device, task, stop, stats)
    try:
        yield relay
    finally:
        if not task.done():
            await relay.stop()


async def http_get(url: str) -> tuple[int, str]:
    """Status and text of a GET (the relay's /metrics and /healthz)."""
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return answer.status, await answer.text()


async def healthz(base: str) -> tuple[int, dict[str, Any]]:
    """The status and the report of /healthz on the relay's metrics listener at ``base``."""
    status, body = await http_get(base + "/healthz")
    return status, json.loads(body)


def metric(text: str, name: str) -> float:
    """One sample's value from Prometheus text (the first line that names it)."""
    line = next(x for x in text.splitlines() if x.startswith(name + " ") or x.startswith(name + "{"))
    return float(line.rsplit(" ", 1)[1])


async def status_exit(relay: RunningRelay, directory: Path) -> tuple[int, str]:
    """`axis-relay status` against a running in-process relay, as cron would run it: a
    config file that names the metrics port the relay bound. Exit code and output."""
    port = int(urlsplit(relay.metrics_url).port or 0)
    raw = {
        "s3": {"bucket": "status-probe"},
        "metrics": {"host": "127.0.0.1", "port": port},
        "devices": {"any": {"token": "status-probe-token"}},
    }
    code, out, _ = await axis_relay("status", "--config", str(write_config(directory / "status.toml", raw)))
    return code, out


@contextlib.asynccontextmanager
async def serving_app(app: aiohttp.web.Application) -> AsyncIterator[str]:
    """``app`` on a free loopback port, plain HTTP, for a test's own stand-in server:
    its base URL."""
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
