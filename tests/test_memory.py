"""Memory stays flat through a long outage: every retry streams the clip from the spool.

A real relay process retries two large clips hundreds of times against an S3 that
reads every body and answers 503 SlowDown; its resident memory is sampled throughout.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from relay.dev.local_s3 import LocalS3
from tests.support.faultproxy import SlowDownProxy
from tests.support.harness import PATH, TLS, raw_config, wait_until, write_config
from tests.support.relay_process import RelayProcess, relay_process

CLIP = 15 * 1024 * 1024  # below the multipart threshold: each attempt is one PutObject
RETRIES = 300
# What a relay may add to its memory while retrying: its connections and what aiohttp
# reads at a time; not a clip (or two, one per worker) per attempt, which is what
# reading each body into memory cost, and what glibc then kept.
MAX_GROWTH = 12 * 1024 * 1024


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
    async with SlowDownProxy(s3_port, server_ssl, tls.client_context(), count=10**9).running() as proxy:
        raw = raw_config(
            tmp_path,
            tls,
            f"https://127.0.0.1:{proxy.port}",
            bucket,
            s3={"multipart_threshold_bytes": 16 * 1024 * 1024},
            retry={"initial_s": 0.001, "max_s": 0.01},
        )
        async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
            for n in range(2):
                assert (await relay.device.post_clip(PATH, os.urandom(CLIP), filename=f"big{n}.mkv")).status == 200
            await wait_until(lambda: proxy.answered >= 2, timeout=60, what="the first attempts")
            start = peak = rss(relay)  # the clips are received; the uploads have begun
            async with asyncio.timeout(120):
                while proxy.answered < RETRIES:  # sample while the outage lasts
                    peak = max(peak, rss(relay))
                    await asyncio.sleep(0.02)
            end = rss(relay)
    mib = 1 << 20
    print(f"\nRSS over {proxy.answered} refused attempts: {start // mib} -> peak {peak // mib}, end {end // mib} MiB")
    assert peak - start < MAX_GROWTH
    assert end - start < MAX_GROWTH
