"""Everything that changes the spool, at once: devices sending, eviction making room,
an operator's 'spool retry' in a loop, and uploads. Afterwards the relay's in-memory
counts must equal a fresh scan of the disk, and the ledger must account for every clip
a device got a 200 for: uploaded or evicted, none lost, none counted twice.
"""

from __future__ import annotations

import asyncio
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import crc32c

from relay.config import parse_config
from relay.dev.local_s3 import LocalS3
from relay.ledger import Ledger
from relay.spool.clip import ClipMeta, crc32c_b64, new_clip_id
from relay.spool.store import DATA, META, SpoolStore
from tests.support.faultproxy import Faults, in_front_of
from tests.support.harness import PATH, TLS, clip_name, list_keys, raw_config, running_relay, wait_until

DEVICES = 6
CLIPS_PER_DEVICE = 12


def plant_quarantined(store: SpoolStore, n: int, *, broken: bool) -> None:
    """Clips as an operator finds them in quarantine/; broken ones fail the check again."""
    for i in range(n):
        body = os.urandom(50_000 + i)
        clip_id = new_clip_id(datetime.now(UTC))
        directory = store.quarantine_dir / clip_id
        directory.mkdir()
        (directory / DATA).write_bytes(body)
        meta = ClipMeta(
            clip_id=clip_id,
            camera="cam-planted",
            filename=f"planted-{clip_id}.mkv",
            content_type="video/x-matroska",
            size=len(body) + (1 if broken else 0),
            crc32c=crc32c_b64(crc32c.crc32c(body)),
            received_at=datetime.now(UTC).isoformat(),
        )
        (directory / META).write_bytes(meta.to_json())


def on_disk(store: SpoolStore) -> tuple[int, int]:
    clips, size = 0, 0
    for d in store.queue_dir.iterdir():
        try:
            size += (d / DATA).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            continue  # delivered and moved out while the directory was listed: polled again
        clips += 1
    return clips, size


async def test_counts_match_the_disk_under_concurrent_ingest_eviction_retry_and_upload(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    faults = Faults(bytes_per_s=1_500_000)  # uploads slower than ingest: the spool fills
    async with in_front_of(s3_server.endpoint_url, faults) as proxy:
        raw = raw_config(
            tmp_path,
            tls,
            proxy.endpoint_url,
            bucket,
            spool={"max_bytes": 3_000_000, "full_policy": "evict_oldest"},
            ingest={"max_uploads_per_device": DEVICES},  # the senders share one device's name
        )
        config = parse_config(raw, environ={})
        store = SpoolStore(config.spool.dir)
        acked: set[str] = set()
        rng = random.Random(7)

        async def device(n: int, relay: Any) -> None:
            for i in range(CLIPS_PER_DEVICE):
                name = f"dev{n}-{i:03d}.mkv"
                clip = rng.randbytes(rng.randrange(60_000, 400_000))
                answer = await relay.device.post_clip(PATH, clip, filename=name, chunked=i % 2 == 1, pieces=4)
                assert answer.status == 200, answer.body
                acked.add(name)

        async def operator(stop: asyncio.Event) -> None:
            planted = 0
            while not stop.is_set():
                if planted < 30:
                    await asyncio.to_thread(plant_quarantined, store, 3, broken=planted % 2 == 1)
                    planted += 3
                await asyncio.to_thread(store.retry_quarantined)  # what 'axis-relay spool retry' calls
                await asyncio.sleep(0.02)

        async with running_relay(config, tls, requeue_scan_s=0.02) as relay:

            async def healthz() -> dict[str, Any]:
                async with aiohttp.ClientSession() as session, session.get(relay.metrics_url + "/healthz") as answer:
                    report: dict[str, Any] = await answer.json()
                    return report

            stop = asyncio.Event()
            retrying = asyncio.create_task(operator(stop))
            await asyncio.gather(*(device(n, relay) for n in range(DEVICES)))
            stop.set()
            await retrying
            await asyncio.to_thread(store.retry_quarantined)
            # Freeze the uploads (every byte to S3 waits), so the spool stands still.
            faults.latency_s = 3600.0

            async def counts_match_disk() -> bool:
                report = await healthz()
                return (report["queued_clips"], report["queued_bytes"]) == await asyncio.to_thread(on_disk, store)

            await wait_until(counts_match_disk, timeout=30, what="in-memory counts to equal the disk")
            faults.latency_s = 0.0
            proxy.abort_all()  # the frozen connections; the uploads are retried

            async def drained() -> bool:
                report = await healthz()
                return report["queued_clips"] == 0 and await asyncio.to_thread(on_disk, store) == (0, 0)

            await wait_until(drained, timeout=120, what="the queue to drain")
            stats = relay.stats

    ledger = Ledger.open_readonly(config.ledger_path)
    try:
        rows = {r.filename: r for r in ledger.clips.find()}
    finally:
        ledger.close()
    from_devices = {name: row for name, row in rows.items() if name.startswith("dev")}
    assert set(from_devices) == acked
    states = {row.state for row in from_devices.values()}
    assert states <= {"uploaded", "evicted"}, states
    evicted = sum(1 for row in from_devices.values() if row.state == "evicted")
    assert evicted > 0, "the test never made the relay evict"
    keys = [clip_name(k) for k in await list_keys(s3, bucket)]
    assert sorted(k for k in keys if k.startswith("dev")) == sorted(
        name for name, row in from_devices.items() if row.state == "uploaded"
    )
    planted = {name: row for name, row in rows.items() if name.startswith("planted")}
    assert planted, "the operator's clips never reached the relay"
    assert {row.state for row in planted.values()} <= {"uploaded", "evicted", "quarantined"}
    assert stats.clips_accepted == len(acked)
