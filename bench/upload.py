"""Upload benchmark: one large clip to S3, by the relay (directly and through the
API Gateway hand-off) and by the AWS CLI as reference.

    make bench            # or: .venv/bin/python bench/upload.py --size-mb 200 --rounds 3

All three send the same file to the same SeaweedFS over TLS on loopback, in
alternating rounds, with 8 MiB parts. The relay sends a clip's parts one after
another (one clip per worker, so that several cameras share the uplink fairly); the
AWS CLI sends 10 parts at once by default, and is also run with one at a time
(``max_concurrent_requests = 1``) for a like-for-like comparison. The relay's time is
from the device's 200 to the clip leaving the spool, so it includes reading the
spooled file, the checksums, and for the hand-off every request to the gateway
stand-in and the function behind it.

Single absolute numbers on a shared machine are noise; quote the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aioboto3
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud.function.handler import ClipBucket
from relay.config import parse_config
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3, free_port
from relay.ops.stats import RelayStats
from relay.server import serve
from tests.support.apigw_standin import ApiGatewayStandIn, function_s3_client
from tests.support.device import Device
from tests.support.harness import TLS

MiB = 1024 * 1024
TOKEN = "bench-token"


async def relay_round(raw: dict[str, Any], ca: trustme.CA, clip: bytes) -> float:
    """Seconds from the device's 200 to the clip uploaded."""
    stats = RelayStats()
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(
        serve(parse_config(raw, environ={}), stop.wait, on_started=lambda _: started.set(), stats=stats)
    )
    await asyncio.wait_for(started.wait(), 30)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    device = Device("127.0.0.1", raw["ingest"]["port"], context)
    answer = await device.post_clip(f"/upload/cam-1?accessToken={TOKEN}", clip, filename=f"{uuid.uuid4().hex}.mkv")
    assert answer.status == 200, answer
    accepted = time.perf_counter()
    while stats.clips_uploaded == 0:
        if stats.clips_quarantined or task.done():
            raise RuntimeError("the relay did not upload the clip")
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - accepted
    stop.set()
    await task
    return seconds


def aws_cli_startup(env: dict[str, str], bucket: str, endpoint: str) -> float:
    """The CLI's own start-up plus one small request, to take out of its upload times."""
    started = time.perf_counter()
    subprocess.run(
        ["aws", "s3api", "head-bucket", "--endpoint-url", endpoint, "--bucket", bucket],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def aws_cli_round(env: dict[str, str], path: Path, bucket: str, endpoint: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            "aws",
            "s3",
            "cp",
            "--only-show-errors",
            "--endpoint-url",
            endpoint,
            str(path),
            f"s3://{bucket}/{uuid.uuid4().hex}.mkv",
        ],
        check=True,
        env=env,
    )
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("aws"):
        sys.exit("the AWS CLI ('aws') is the reference: install it (pip install awscli) and run again")
    work = Path(tempfile.mkdtemp(prefix="axis-relay-bench-"))
    ca = TLS.create(work).ca
    clip = os.urandom(args.size_mb * MiB)
    clip_file = work / "clip.mkv"
    clip_file.write_bytes(clip)
    bucket = "bench-clips"
    try:
        local = LocalS3(data_dir=work / "s3", tls_cert=work / "cert.pem", tls_key=work / "key.pem")
        async with local.running():
            session = aioboto3.Session(ACCESS_KEY, SECRET_KEY, region_name="us-east-1")
            async with session.client("s3", endpoint_url=local.endpoint_url, verify=str(work / "ca.pem")) as s3:
                await s3.create_bucket(Bucket=bucket)
            sync_s3 = function_s3_client(local.endpoint_url, work / "ca.pem")
            gateway = ApiGatewayStandIn(ClipBucket(sync_s3, bucket).handle, work / "cert.pem", work / "key.pem")
            async with gateway.running():
                common: dict[str, Any] = {
                    "ingest": {
                        "host": "127.0.0.1",
                        "tls_cert": str(work / "cert.pem"),
                        "tls_key": str(work / "key.pem"),
                    },
                    "metrics": {"enabled": False},
                    "log": {"level": "warning"},
                    "devices": {"cam-1": {"token": TOKEN}},
                }
                uploads = {"multipart_threshold_bytes": 16 * MiB, "part_size_bytes": 8 * MiB, "workers": 1}

                def direct() -> dict[str, Any]:
                    return {
                        **common,
                        "ingest": {**common["ingest"], "port": free_port()},
                        "spool": {"dir": str(work / f"spool-{uuid.uuid4().hex}"), "min_free_bytes": 0},
                        "s3": {
                            "bucket": bucket,
                            "endpoint_url": local.endpoint_url,
                            "ca_bundle": str(work / "ca.pem"),
                            "addressing_style": "path",
                            "access_key_id": ACCESS_KEY,
                            "secret_access_key": SECRET_KEY,
                            **uploads,
                        },
                    }

                def handoff() -> dict[str, Any]:
                    raw = direct()
                    del raw["s3"]
                    raw["destination"] = "apigw"
                    raw["apigw"] = {
                        "url": gateway.url("upload"),
                        "handoff_url": gateway.url("handoff"),
                        "ca_bundle": str(work / "ca.pem"),
                        **uploads,
                    }
                    return raw

                env = {
                    **os.environ,
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_CA_BUNDLE": str(work / "ca.pem"),
                    "AWS_CONFIG_FILE": str(work / "aws-config"),
                }
                (work / "aws-config").write_text("[default]\ns3 =\n  multipart_chunksize = 8MB\n")
                serial_env = {**env, "AWS_CONFIG_FILE": str(work / "aws-config-serial")}
                (work / "aws-config-serial").write_text(
                    "[default]\ns3 =\n  multipart_chunksize = 8MB\n  max_concurrent_requests = 1\n"
                )
                runs: dict[str, Callable[[], Awaitable[float]]] = {
                    "relay, direct S3": lambda: relay_round(direct(), ca, clip),
                    "relay, API Gateway hand-off": lambda: relay_round(handoff(), ca, clip),
                    "aws s3 cp (10 parts at once)": lambda: asyncio.to_thread(
                        aws_cli_round, env, clip_file, bucket, local.endpoint_url
                    ),
                    "aws s3 cp (1 part at a time)": lambda: asyncio.to_thread(
                        aws_cli_round, serial_env, clip_file, bucket, local.endpoint_url
                    ),
                    "aws start-up + head-bucket": lambda: asyncio.to_thread(
                        aws_cli_startup, env, bucket, local.endpoint_url
                    ),
                }
                times: dict[str, list[float]] = {name: [] for name in runs}
                for _ in range(args.rounds):
                    for name, run in runs.items():
                        times[name].append(await run())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.size_mb} MiB clip, {args.rounds} rounds, median seconds and MB/s:")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in medians.items():
        if name.startswith("aws start-up"):
            print(f"  {name:<32} {seconds:7.2f} s")
            continue
        print(f"  {name:<32} {seconds:7.2f} s  {args.size_mb * MiB / seconds / 1e6:7.1f} MB/s")
    direct_s, handoff_s = medians["relay, direct S3"], medians["relay, API Gateway hand-off"]
    print(f"ratio hand-off / direct:             {handoff_s / direct_s:.2f}")
    startup = medians["aws start-up + head-bucket"]
    for parts in ("1 part at a time", "10 parts at once"):
        cli = medians[f"aws s3 cp ({parts})"]
        without = direct_s / (cli - startup)
        print(f"ratio relay direct / aws ({parts}): {direct_s / cli:.2f}; without its start-up: {without:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
