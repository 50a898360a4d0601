"""Ingest benchmark: one large clip over HTTPS into the relay, against nginx as reference.

    make bench            # or: .venv/bin/python bench/ingest.py --size-mb 200 --rounds 3

Both servers get the same body from the same client (curl) over TLS on loopback, in
alternating rounds. nginx (WebDAV PUT) only writes the body to disk; the relay also
takes a CRC32C, fsyncs file and directory, and answers only then, so the ratio shows
what durability costs. Also reported: the relay's peak RSS (VmHWM) before and after
receiving, which shows whether memory grows with clip size. The relay uploads to an
embedded SeaweedFS meanwhile, as it would in production.

Single absolute numbers on a shared machine are noise; quote the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import nginx, vm_hwm_kib
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3, free_port
from tests.support.harness import TLS


def curl(method: str, url: str, body: Path, ca: Path, extra: list[str]) -> float:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            method,
            "--cacert",
            str(ca),
            "--data-binary",
            f"@{body}",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total}",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not out[0].startswith("2"):
        raise RuntimeError(f"{url} answered {out[0]}")
    return float(out[1])


async def main(size_mb: int, rounds: int, s3_down: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    try:
        TLS.create(work)  # ca.pem, cert.pem, key.pem in work
        clip = work / "clip.mkv"
        with open(clip, "wb") as f:
            for _ in range(size_mb):
                f.write(os.urandom(1024 * 1024))

        local = LocalS3(data_dir=work / "s3")
        await local.start()
        import aioboto3

        session = aioboto3.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
        )
        async with session.client("s3", endpoint_url=local.endpoint_url) as s3:
            await s3.create_bucket(Bucket="bench")

        port = free_port()
        config = {
            "ingest": {
                "host": "127.0.0.1",
                "port": port,
                "tls_cert": str(work / "cert.pem"),
                "tls_key": str(work / "key.pem"),
            },
            "spool": {"dir": str(work / "spool")},
            "s3": {
                "bucket": "bench",
                "endpoint_url": f"http://127.0.0.1:{free_port()}" if s3_down else local.endpoint_url,
                "addressing_style": "path",
                "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY,
            },
            "log": {"format": "json", "level": "warning"},
            "devices": {"cam": {"token": "t"}},
        }
        (work / "relay.toml").write_text(tomli_w.dumps(config))
        relay = subprocess.Popen([sys.executable, "-m", "relay", "run", "--config", str(work / "relay.toml")])
        nginx_port = free_port()
        reference = (
            nginx(work, nginx_port, work / "cert.pem", work / "key.pem")
            if shutil.which("nginx")
            else contextlib.nullcontext()
        )
        ca_file = work / "ca.pem"
        relay_url = f"https://127.0.0.1:{port}/upload/cam?accessToken=t"
        deadline = time.monotonic() + 30
        while subprocess.run(["curl", "-s", "--cacert", str(ca_file), relay_url], capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("relay did not start")
            await asyncio.sleep(0.1)
        try:
            with reference as web:
                hwm_idle = vm_hwm_kib(relay.pid)
                relay_times, nginx_times = [], []
                headers = [
                    "-H",
                    "Content-Type: video/x-matroska",
                    "-H",
                    'Content-Disposition: attachment; filename="b.mkv"',
                ]
                for n in range(rounds):
                    relay_times.append(curl("POST", relay_url, clip, ca_file, headers))
                    if web is not None:
                        url = f"https://127.0.0.1:{nginx_port}/upload/b{n}.mkv"
                        nginx_times.append(curl("PUT", url, clip, ca_file, []))
                hwm_after = vm_hwm_kib(relay.pid)
        finally:
            relay.terminate()
            relay.wait(30)
            local.stop()

        mb = size_mb * 1024 * 1024 / 1e6
        relay_best, relay_median = min(relay_times), statistics.median(relay_times)
        print(f"clip: {size_mb} MiB, {rounds} rounds, curl over TLS on loopback")
        print(f"relay:  median {relay_median:.2f} s = {mb / relay_median:.0f} MB/s (best {mb / relay_best:.0f} MB/s)")
        if nginx_times:
            nginx_median = statistics.median(nginx_times)
            print(f"nginx:  median {nginx_median:.2f} s = {mb / nginx_median:.0f} MB/s (WebDAV PUT, no fsync)")
            print(f"ratio relay/nginx throughput: {nginx_median / relay_median:.2f}")
        else:
            print("nginx not installed: no reference (apt-get install nginx-light)")
        print(f"uploads: {'off (S3 unreachable)' if s3_down else 'running to SeaweedFS meanwhile'}")
        print(f"relay peak RSS: {hwm_idle / 1024:.0f} MiB after start, {hwm_after / 1024:.0f} MiB after receiving")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--s3-down", action="store_true", help="ingest only: S3 unreachable, nothing uploads")
    args = parser.parse_args()
    asyncio.run(main(args.size_mb, args.rounds, args.s3_down))
