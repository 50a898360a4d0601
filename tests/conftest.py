"""Fixtures only (helpers live in tests/support): a real SeaweedFS S3 server over TLS,
a bucket per test, the relay in-process.

Nothing here mocks S3 or the relay: every test talks over real loopback sockets with
real TLS, and waits on polled states with a bound, never on a fixed sleep.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.dev.local_s3 import LocalS3
from tests.support.apigw_standin import function_s3_client
from tests.support.harness import DEVICE, TLS, RunningRelay, relay_config, running_relay, s3_client
from tests.support.vapix_camera import CameraEmulator


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLS:
    return TLS.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
async def s3_server(tmp_path_factory: pytest.TempPathFactory, tls: TLS) -> AsyncIterator[LocalS3]:
    # Over TLS on purpose: botocore frames bodies differently on HTTPS than on HTTP.
    server = LocalS3(data_dir=tmp_path_factory.mktemp("s3"), tls_cert=tls.cert_file, tls_key=tls.key_file)
    async with server.running():
        yield server


@pytest.fixture
async def s3(s3_server: LocalS3, tls: TLS) -> AsyncIterator[Any]:
    async with s3_client(s3_server.endpoint_url, tls) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any) -> str:
    name = f"clips-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def relay(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str) -> AsyncIterator[RunningRelay]:
    async with running_relay(relay_config(tmp_path, tls, s3_server.endpoint_url, bucket), tls) as running:
        yield running


@pytest.fixture
def function_s3(s3_server: LocalS3, tls: TLS) -> Iterator[Any]:
    """The cloud function's own S3 client (boto3, synchronous, as in Lambda)."""
    client = function_s3_client(s3_server.endpoint_url, tls.ca_file)
    yield client
    client.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "long: minutes of real time (started first, so two workers share the rest)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first: with two workers, one runs each while the other works
    through the short ones, instead of a long test starting last and alone."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


# A test that skips proves nothing, and a green run would hide it: every skip fails the
# run unless AXIS_RELAY_ALLOW_SKIPS=1 says a person chose it (a laptop without root,
# say). `make system-tools` installs what the skipping tests need.
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus == 0 and os.environ.get("AXIS_RELAY_ALLOW_SKIPS") != "1":
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped and os.environ.get("AXIS_RELAY_ALLOW_SKIPS") != "1":
        terminalreporter.write_line("unexpected skips fail the run (set AXIS_RELAY_ALLOW_SKIPS=1 to allow them):")
        for line in _skipped:
            terminalreporter.write_line(f"  {line}")


@pytest.fixture
async def camera(tls: TLS) -> AsyncIterator[CameraEmulator]:
    """An emulated AXIS camera named DEVICE, serving VAPIX over HTTPS, with the relay's
    CA installed (as `camera setup` expects, for its test recipients)."""
    emulator = CameraEmulator(DEVICE)
    emulator.services.trust = tls.client_context()
    async with emulator.serving(tls.server_context()):
        yield emulator
