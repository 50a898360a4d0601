"""CPU the relay spends per GB uploaded, with and without SHA-256 payload signing.

    .venv/bin/python bench/signing.py [--size-mb 320] [--rounds 3]

The relay sends its own x-amz-checksum-crc32c (taken at ingest), so botocore does not
skip the payload hash as it would for a checksum it computed itself: every byte is
hashed with SHA-256 for the signature. This sends the same PutObjects, the way the
relay's S3 store does (bodies streamed from a file, CRC32C header), to SeaweedFS over
TLS on loopback, with payload signing on and off, in alternating rounds, and reports
this process's CPU seconds per GB for each and their ratio. Quote the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aioboto3
import crc32c
import trustme
from aiobotocore.config import AioConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay._compat import OneAttemptHTTPSession
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3
from relay.upload.body import FileRange

MiB = 1024 * 1024
CLIP = 8 * MiB


async def upload_round(endpoint: str, ca_file: Path, bucket: str, clip: Path, count: int, signing: bool) -> float:
    """CPU seconds of this process to PutObject ``count`` clips."""
    session = aioboto3.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1")
    config = AioConfig(
        retries={"total_max_attempts": 1, "mode": "standard"},
        http_session_cls=OneAttemptHTTPSession,
        s3={"addressing_style": "path", "payload_signing_enabled": signing},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    checksum = base64.b64encode(crc32c.crc32c(clip.read_bytes()).to_bytes(4, "big")).decode()
    async with session.client("s3", endpoint_url=endpoint, config=config, verify=str(ca_file)) as client:
        started = time.process_time()
        for n in range(count):
            async with FileRange(clip, 0, CLIP).sending("bench", stall_warning_s=60, give_up_s=120) as stream:
                await client.put_object(
                    Bucket=bucket, Key=f"bench/{signing}/{n}.mkv", Body=stream, ChecksumCRC32C=checksum
                )
        return time.process_time() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=320, help="MiB per round (8 MiB clips)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    count = max(1, args.size_mb * MiB // CLIP)
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1", "localhost")
        issued.private_key_and_cert_chain_pem.write_to_path(str(work / "server.pem"))
        ca.cert_pem.write_to_path(str(work / "ca.pem"))
        clip = work / "clip.mkv"
        clip.write_bytes(bytes(range(256)) * (CLIP // 256))
        local = LocalS3(data_dir=work / "s3", tls_cert=work / "server.pem", tls_key=work / "server.pem")
        async with local.running():
            admin = aioboto3.Session(
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
            )
            async with admin.client("s3", endpoint_url=local.endpoint_url, verify=str(work / "ca.pem")) as s3:
                await s3.create_bucket(Bucket="bench")
            cpu: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.rounds):
                for signing in (True, False):
                    seconds = await upload_round(local.endpoint_url, work / "ca.pem", "bench", clip, count, signing)
                    cpu[signing].append(seconds)
    gigabytes = count * CLIP / 1e9
    per_gb: dict[bool, float] = {k: statistics.median(v) / gigabytes for k, v in cpu.items()}
    print(f"{count} x 8 MiB PutObject over TLS, {args.rounds} rounds, median CPU seconds per GB of this process:")
    print(f"  payload signing on  (SHA-256 of every body): {per_gb[True]:.2f}")
    print(f"  payload signing off (the relay over HTTPS):  {per_gb[False]:.2f}")
    print(f"ratio off / on: {per_gb[False] / per_gb[True]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
