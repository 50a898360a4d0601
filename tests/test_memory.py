"""Memory stays flat through a long outage: every retry streams the clip from the spool.

A real relay process retries two large clips against an S3 that answers 100 Continue,
reads every body byte (counted) and then answers 503 SlowDown; its resident memory is
sampled throughout, from before the clips arrive.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from relay.dev.local_s3 import LocalS3
from tests.support.faultproxy import SlowDownProxy
from tests.support.harness import PATH, TLS, raw_config, write_config
from tests.support.relay_process import RelayProcess, relay_process

CLIP = 15 * 1024 * 1024  # below the multipart threshold: each attempt is one PutObject
RETRIES = 30  # each one carries the whole clip: 450 MB through the proxy
# What a relay may add to its memory through the outage: less than one clip. Reading
# each body into memory costs a clip per worker per attempt, and glibc keeps it.


def rss(relay: RelayProcess) -> int:
    assert relay.pid is not None
    for line in Path(f"/proc/{relay.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_rss_stays_flat_across_hundreds_of_retries(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    server_ssl = tls.server_context()
    s3_port = int(s3_server.endpoint_url.rsplit(":", 1)[1])
    proxy_ = SlowDownProxy(s3_port, server_ssl, tls.client_context(), count=10**9, read_bodies=True)
    async with proxy_.running() as proxy:
        raw = raw_config(
            tmp_path,
            tls,
            f"https://127.0.0.1:{proxy.port}",
            bucket,
            s3={"multipart_threshold_bytes": 16 * 1024 * 1024},
            retry={"initial_s": 0.001, "max_s": 0.01},
        )
        async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
            start = peak = rss(relay)  # before any clip: receiving them counts too
            for n in range(2):
                assert (await relay.device.post_clip(PATH, os.urandom(CLIP), filename=f"big{n}.mkv")).status == 200
            async with asyncio.timeout(150):
                while proxy.answered < RETRIES:  # sample while the outage lasts
                    peak = max(peak, rss(relay))
                    await asyncio.sleep(0.02)
            end = rss(relay)
            sent = proxy.body_bytes
    mib = 1 << 20
    print(
        f"\nRSS over {proxy.answered} refused attempts ({sent // mib} MiB of clip bodies sent): "
        f"{start // mib} -> peak {peak // mib}, end {end // mib} MiB"
    )
    assert sent >= (RETRIES - 2) * CLIP  # every attempt carried its clip, all of it
    assert peak - start < CLIP
    assert end - start < CLIP
