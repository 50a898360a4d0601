"""What the benchmarks run and measure: nginx as the reference server, the relay as a
process of its own, a gate in front of S3, and the CPU and memory of a process tree."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import tomli_w

NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {d}/nginx-error.log;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-tmp;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {protocols};
        {ciphers}
        client_max_body_size 0;
        location /upload/ {{
            root {d}/nginx-root;
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"""

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def vm_hwm_kib(pid: int) -> int:
    """A process's peak resident memory so far (all its threads)."""
    return _status_kib(pid, "VmHWM")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU of a process, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


class Meter:
    """CPU and peak RSS of a server: the process and the workers it started."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def pids(self) -> list[int]:
        return [self.pid, *children(self.pid)]

    def cpu(self) -> float:
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """User and system seconds: what the server's code costs, and the kernel's work
        for it (TCP, page cache, fsync)."""
        times = [cpu_seconds(p) for p in self.pids()]
        return sum(t[0] for t in times), sum(t[1] for t in times)

    def peak_rss_mib(self) -> float:
        """The largest single process's peak: nginx's worker, the relay itself."""
        return max(vm_hwm_kib(p) for p in self.pids()) / 1024


@contextlib.contextmanager
def nginx(
    work: Path,
    port: int,
    cert: Path,
    key: Path,
    cpus: str | None = None,
    *,
    ciphers: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """nginx, one worker, taking TLS WebDAV PUTs to ``/upload/`` (written, not fsynced);
    with ``ciphers``, over TLS 1.2 in the server's order (as the relay's
    ``tls_prefer_chacha20``)."""
    # nginx's worker runs as an unprivileged user: let it write here.
    work.chmod(0o755)
    for d in (work / "nginx-tmp", work / "nginx-root" / "upload"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o777)
    (work / "nginx-root").chmod(0o777)
    conf = work / "nginx.conf"
    choice = f"ssl_ciphers {ciphers}; ssl_prefer_server_ciphers on;" if ciphers else ""
    protocols = "TLSv1.2" if ciphers else "TLSv1.2 TLSv1.3"
    conf.write_text(NGINX_CONF.format(d=work, port=port, cert=cert, key=key, protocols=protocols, ciphers=choice))
    command = [*taskset(cpus), "nginx", "-c", str(conf), "-p", str(work)]
    process = subprocess.Popen(command, env={**os.environ, **(env or {})})
    try:
        wait_for_port(port, process)
        yield process
    finally:
        process.terminate()
        process.wait(10)


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def wait_for_port(port: int, process: subprocess.Popen[Any], timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout} s")
        time.sleep(0.05)


UNIT = Path(__file__).resolve().parent.parent / "systemd" / "axis-relay.service"


def unit_environment() -> dict[str, str]:
    """The Environment= of the systemd unit, so a benchmarked relay runs as installed."""
    found = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            found[name] = value
    return found


class RelayProcess:
    """``axis-relay run`` in a process of its own, watched through its /metrics."""

    def __init__(
        self,
        work: Path,
        config: dict[str, Any],
        *,
        cpus: str | None = None,
        env: dict[str, str] | None = None,
        source: Path | None = None,
    ) -> None:
        self.config = config
        self.path = work / f"relay-{time.monotonic_ns()}.toml"
        self.path.write_text(tomli_w.dumps(config))
        command = [*taskset(cpus), sys.executable, "-m", "relay", "run", "--config", str(self.path)]
        # Its warnings (upload_retry while the gate is shut) go to a file, not the table.
        self.log = self.path.with_suffix(".log")
        # source: another checkout of the relay (e.g. a git worktree of an older commit),
        # imported ahead of this one, to measure a change against it in the same run.
        env = {**os.environ, **(env or {}), **({"PYTHONPATH": str(source)} if source else {})}
        with open(self.log, "wb") as log:
            # From its own directory: ``python -m`` looks in the current one first.
            self.process = subprocess.Popen(command, env=env, stderr=log, cwd=source)
        wait_for_port(config["ingest"]["port"], self.process)
        wait_for_port(config["metrics"]["port"], self.process)
        self.meter = Meter(self.process.pid)

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.config['metrics']['port']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(name)

    async def wait_drained(self, timeout: float) -> bool:
        """Until no clip waits for upload; False when that takes longer than ``timeout``.
        Polls without blocking the loop (the gate to S3 runs on it)."""
        deadline = time.monotonic() + timeout
        while await asyncio.to_thread(self.metric, "axis_relay_spool_clips") > 0:
            if self.process.poll() is not None:
                raise RuntimeError(f"the relay exited with {self.process.returncode}: {self.log}")
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)  # the relay renders /metrics for each poll: not too often
        return True

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


class Gate:
    """A TCP forwarder in front of S3 that can be shut: uploads pause, with nothing
    changed in the relay. While shut it accepts connections and holds them unanswered
    (the relay's request waits, then times out, ``connect_timeout_s``), rather than
    refusing them, which would make the relay retry every backoff and bill that churn
    to ingest. Opened, it forwards what it holds and every new connection."""

    def __init__(self, port: int, upstream_port: int) -> None:
        self.port = port
        self._upstream = upstream_port
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._open.set()

    async def shut(self) -> None:
        self._open.clear()
        for writer in list(self._links):
            writer.transport.abort()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._links.add(writer)
        try:
            await self._open.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream, limit=1 << 20)
            except OSError:
                return
            self._links.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
            up_writer.transport.abort()
            self._links.discard(up_writer)
        except asyncio.CancelledError:
            pass  # the benchmark ended
        finally:
            self._links.discard(writer)
            writer.transport.abort()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Gate]:
        self._open.set()
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port, reuse_address=True)
        try:
            yield self
        finally:
            self._server.close()
            await self.shut()
            await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 20):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


def aws_cli_path() -> str | None:
    """The AWS CLI of the project's own environment (requirements/dev.lock), else any."""
    own = Path(sys.executable).with_name("aws")
    return str(own) if own.exists() else shutil.which("aws")


def run_counted(command: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) of a finished command and everything it started."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command[:3])} failed with {process.returncode}")
    return usage.ru_utime + usage.ru_stime
