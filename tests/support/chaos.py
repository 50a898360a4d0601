"""The chaos loop shared by the S3 and API Gateway tests: a device streams clips while
the relay is SIGKILLed at random moments; then S3 must hold exactly what was acknowledged.

Longer runs: CHAOS_CYCLES=100 .venv/bin/pytest tests/test_chaos.py -s
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import crc32c

from tests.support.device import Device
from tests.support.harness import PATH, TLS, clip_name, list_keys, object_bytes, wait_until, write_config
from tests.support.relay_process import relay_process

CYCLES = int(os.environ.get("CHAOS_CYCLES", "6"))


async def kill_at_random(raw: dict[str, Any], tmp_path: Path, tls: TLS, s3: Any, bucket: str) -> None:
    """Stream clips into a relay run with ``raw`` while killing it; then check ``bucket``."""
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    acked: dict[str, int] = {}  # file name -> CRC32C of what the device sent
    unanswered: dict[str, int] = {}
    stop_sending = asyncio.Event()

    async def stream_clips(device: Device) -> None:
        n = 0
        while not stop_sending.is_set():
            n += 1
            name = f"chaos{n:05d}.mkv"
            clip = rng.randbytes(rng.choice([20_000, 300_000, 2_000_000, 7_000_000]))
            try:
                answer = await device.post_clip(PATH, clip, filename=name, chunked=rng.random() < 0.5, pieces=8)
            except ConnectionRefusedError:
                await asyncio.sleep(0.05)  # the relay is restarting; the device tries its next clip
                continue
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                unanswered[name] = crc32c.crc32c(clip)  # cut off mid-request by the kill
                continue
            (acked if answer.status == 200 else unanswered)[name] = crc32c.crc32c(clip)

    async with relay_process(write_config(tmp_path / "relay.toml", raw), tls.client_context()) as relay:
        # The device follows the relay to the port each new process binds.
        sender = asyncio.create_task(stream_clips(relay.device))
        for _ in range(CYCLES):
            await asyncio.sleep(rng.uniform(0.1, 1.5))  # a random moment to pull the plug
            await relay.kill()
            await relay.start()
        stop_sending.set()
        await sender
        queue = Path(raw["spool"]["dir"]) / "queue"
        await wait_until(lambda: not list(queue.iterdir()), timeout=120, what="the queue to drain")

    keys = await list_keys(s3, bucket)
    names = [clip_name(k) for k in keys]
    base_names = [n.split("~")[0].removesuffix(".mkv") + ".mkv" for n in names]
    duplicated = len(base_names) - len(set(base_names))
    lost = sorted(set(acked) - set(base_names))
    unexpected = sorted(set(base_names) - set(acked) - set(unanswered))
    open_uploads = (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])
    quarantined = list((Path(raw["spool"]["dir"]) / "quarantine").iterdir())
    print(
        f"\nchaos seed={seed} destination={raw.get('destination', 's3')}: kill cycles {CYCLES}, "
        f"clips acknowledged {len(acked)}, "
        f"unanswered {len(unanswered)}, objects in S3 {len(keys)}, lost {len(lost)}, duplicated {duplicated}, "
        f"multipart uploads left open {len(open_uploads)}, quarantined {len(quarantined)}"
    )
    assert acked, "the device never got a clip through"
    assert lost == []
    assert duplicated == 0
    assert unexpected == []
    assert open_uploads == []
    assert quarantined == []
    for key, name in zip(keys, base_names, strict=True):
        expected = acked.get(name, unanswered.get(name))
        assert crc32c.crc32c(await object_bytes(s3, bucket, key)) == expected, key
