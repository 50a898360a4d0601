"""Quota, a full disk and damaged spool files: the daemon keeps running, accepted clips survive."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from relay.dev.local_s3 import LocalS3, free_port
from tests.support.disk import small_filesystem
from tests.support.harness import (
    PATH,
    TLS,
    http_get,
    list_keys,
    metric,
    relay_config,
    running_relay,
    status_exit,
    wait_until,
)


async def test_full_disk_answers_507_and_keeps_accepted_clips(tmp_path: Path, tls: TLS) -> None:
    dead = f"https://127.0.0.1:{free_port()}"  # nothing uploads: the spool only fills
    with small_filesystem(tmp_path / "small", "6m") as fs:
        config = relay_config(tmp_path, tls, dead, "clips", spool={"dir": str(fs / "spool")})
        async with running_relay(config, tls) as relay:
            kept = {}
            for n in range(2):
                clip = os.urandom(2 * 1024 * 1024)
                answer = await relay.device.post_clip(PATH, clip, filename=f"ok{n}.mkv")
                assert answer.status == 200
                kept[json.loads(answer.body)["clip_id"]] = clip
            # Announced size that cannot fit: refused before a byte is written.
            too_big = await relay.device.post_clip(PATH, os.urandom(3 * 1024 * 1024))
            assert too_big.status == 507
            # Unknown size (chunked): runs into ENOSPC mid-write.
            chunked = await relay.device.post_clip(PATH, os.urandom(3 * 1024 * 1024), chunked=True, pieces=30)
            assert chunked.status == 507
            assert list((fs / "spool" / "incoming").iterdir()) == []
            assert (await relay.device.request("GET", PATH)).status == 200  # still serving
            for clip_id, clip in kept.items():
                assert (fs / "spool" / "queue" / clip_id / "data").read_bytes() == clip
            assert relay.stats.clips_accepted == 2


async def test_concurrent_uploads_into_a_nearly_full_disk_get_what_fits(tmp_path: Path, tls: TLS) -> None:
    """Four 5 MiB clips at once into 12 MiB, no free-space floor: two fit, and two get 507
    before a byte is written. Without room promised to uploads in flight, all four passed
    the check, all four ran into ENOSPC half-way, and all four got 507."""
    dead = f"https://127.0.0.1:{free_port()}"
    with small_filesystem(tmp_path / "small", "12m") as fs:
        config = relay_config(tmp_path, tls, dead, "clips", spool={"dir": str(fs / "spool"), "min_free_bytes": 0})
        async with running_relay(config, tls) as relay:
            clips = [os.urandom(5 * 1024 * 1024) for _ in range(4)]
            # All four in flight together, as fast as loopback carries them.
            answers = await asyncio.gather(
                *(relay.device.post_clip(PATH, c, filename=f"c{n}.mkv", pieces=40) for n, c in enumerate(clips))
            )
            statuses = sorted(a.status for a in answers)
            assert statuses == [200, 200, 507, 507], [(a.status, a.body) for a in answers]
            for answer, clip in zip(answers, clips, strict=True):
                if answer.status == 200:
                    clip_id = json.loads(answer.body)["clip_id"]
                    assert (fs / "spool" / "queue" / clip_id / "data").read_bytes() == clip
            assert list((fs / "spool" / "incoming").iterdir()) == []


async def test_quota_policies(tmp_path: Path, tls: TLS) -> None:
    """What each policy keeps; refusing clips is unhealthy (devices do not resend them),
    and evictions are counted."""
    dead = f"https://127.0.0.1:{free_port()}"
    for policy in ("reject", "evict_oldest"):
        config = relay_config(
            tmp_path / policy,
            tls,
            dead,
            "clips",
            spool={"max_bytes": 350_000, "full_policy": policy},
            s3={"workers": 1},  # the clip a worker holds is never evicted
        )
        async with running_relay(config, tls) as relay:
            statuses = []
            # Three fit; the fourth finds two that could make room (c1, c2): the oldest goes.
            for n in range(4):
                answer = await relay.device.post_clip(PATH, os.urandom(100_000), filename=f"c{n}.mkv")
                statuses.append(answer.status)
            names = {
                json.loads((relay.spool / "queue" / c / "meta.json").read_text())["filename"] for c in relay.queued()
            }
            health_status, body = await http_get(relay.metrics_url + "/healthz")
            status_code, _ = await status_exit(relay, tmp_path)
            _, text = await http_get(relay.metrics_url + "/metrics")
            if policy == "reject":
                # Failing for a minute after the 507, then not: the refusal's time moved
                # back (no one waits a minute), the verdict read from /healthz each time.
                refused_at = relay.stats.last_refused_spool_full_at
                assert refused_at is not None
                relay.stats.last_refused_spool_full_at = refused_at - 58
                assert (await http_get(relay.metrics_url + "/healthz"))[0] == 503
                relay.stats.last_refused_spool_full_at = refused_at - 61
                assert (await http_get(relay.metrics_url + "/healthz"))[0] == 200
        report = json.loads(body)
        if policy == "reject":
            assert statuses == [200, 200, 200, 507]
            assert names == {"c0.mkv", "c1.mkv", "c2.mkv"}
            assert health_status == 503
            assert report["status"] == "failing"
            assert status_code == 2
            assert [r["code"] for r in report["reasons"] if r["level"] == "failing"] == ["spool_full"]
            assert any("the spool is full" in p for p in report["problems"])
            assert report["clips_refused_spool_full"] == 1
            assert metric(text, "axis_relay_clips_refused_spool_full_total") == 1
        else:
            assert statuses == [200, 200, 200, 200]
            assert names == {"c0.mkv", "c2.mkv", "c3.mkv"}  # c1, the oldest not held, made room
            assert health_status == 200, body
            assert status_code == 0
            assert report["clips_evicted"] == 1
            assert metric(text, "axis_relay_clips_evicted_total") == 1
            assert metric(text, "axis_relay_bytes_evicted_total") == 100_000


async def test_damaged_spool_entries_are_quarantined_not_uploaded(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket)
    dead = relay_config(tmp_path, tls, f"https://127.0.0.1:{free_port()}", bucket)
    clips = {"truncated": os.urandom(50_000), "flipped": os.urandom(60_000), "badmeta": os.urandom(1000)}
    clips["flipped_multipart"] = os.urandom(11 * 1024 * 1024)
    ids = {}
    async with running_relay(dead, tls) as relay:  # S3 unreachable: the clips wait
        for name, clip in clips.items():
            answer = await relay.device.post_clip(PATH, clip, filename=f"{name}.mkv")
            assert answer.status == 200
            ids[name] = json.loads(answer.body)["clip_id"]
    queue = config.spool.dir / "queue"
    with open(queue / ids["truncated"] / "data", "r+b") as f:
        f.truncate(10_000)
    for name in ("flipped", "flipped_multipart"):
        with open(queue / ids[name] / "data", "r+b") as f:
            f.seek(7 * 1024 * 1024 if name == "flipped_multipart" else 1234)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x01]))
    (queue / ids["badmeta"] / "meta.json").write_text("{not json")
    async with running_relay(config, tls) as relay:
        await wait_until(lambda: len(relay.quarantined()) == 4, timeout=60, what="4 quarantined clips")
        reasons = {name: relay.quarantine_reason(ids[name])["reason"] for name in ids}
    assert "metadata says" in reasons["truncated"]
    assert "unreadable" in reasons["badmeta"]
    assert "BadDigest" in reasons["flipped"] or "checksum" in reasons["flipped"]
    assert "checksum" in reasons["flipped_multipart"]
    assert await list_keys(s3, bucket) == []
    # The damaged multipart clip's upload was aborted, not left to cost money.
    assert not (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads")


async def test_evict_oldest_makes_room_for_chunked_clips_on_a_full_disk(tmp_path: Path, tls: TLS) -> None:
    """A body of unknown length makes room as it grows; it never runs into ENOSPC and
    a 507 while older clips could have been evicted."""
    dead = "https://127.0.0.1:1"  # nothing uploads: only eviction frees the disk
    with small_filesystem(tmp_path / "small", "24m") as fs:
        config = relay_config(
            tmp_path, tls, dead, "clips", spool={"dir": str(fs / "spool"), "full_policy": "evict_oldest"}
        )
        async with running_relay(config, tls) as relay:
            for n in range(4):  # fill most of the disk with clips nobody uploads
                assert (
                    await relay.device.post_clip(PATH, os.urandom(5 * 1024 * 1024), filename=f"old{n}.mkv")
                ).status == 200
            statuses = []
            for n in range(3):
                clip = os.urandom(10 * 1024 * 1024)
                answer = await relay.device.post_clip(PATH, clip, filename=f"new{n}.mkv", chunked=True, pieces=40)
                statuses.append(answer.status)
            kept = {
                json.loads((relay.spool / "queue" / c / "meta.json").read_text())["filename"] for c in relay.queued()
            }
    assert statuses == [200, 200, 200]
    # The two oldest are held by the upload workers; the next oldest made the room.
    assert "old2.mkv" not in kept
    assert "old3.mkv" not in kept
    assert "new2.mkv" in kept


async def test_min_free_bytes_keeps_a_floor_of_free_disk(tmp_path: Path, tls: TLS) -> None:
    """spool.min_free_bytes at 5 MiB on a 12 MiB disk: three 2 MiB clips fit above the
    floor; the fourth would leave less than 5 MiB free and is refused (507), though the
    disk itself still has room for it."""
    dead = f"https://127.0.0.1:{free_port()}"
    floor = 5 * 1024 * 1024
    with small_filesystem(tmp_path / "small", "12m") as fs:
        config = relay_config(tmp_path, tls, dead, "clips", spool={"dir": str(fs / "spool"), "min_free_bytes": floor})
        async with running_relay(config, tls) as relay:
            statuses = []
            for n in range(4):
                answer = await relay.device.post_clip(PATH, os.urandom(2 * 1024 * 1024), filename=f"c{n}.mkv")
                statuses.append(answer.status)
            free = shutil.disk_usage(fs).free
            assert statuses == [200, 200, 200, 507]
            assert 2 * 1024 * 1024 < free < floor + 2 * 1024 * 1024  # it would have fitted, under the floor
            assert len(relay.queued()) == 3


async def test_a_spool_gone_read_only_is_failing_and_recovers_when_writable(tmp_path: Path, tls: TLS) -> None:
    """The spool's queue becomes a read-only mount under the running relay (as after an
    SD card's errors=remount-ro; a bind mount here, since the ledger holds the spool's
    own file system open for writing): /healthz 503 with spool_unwritable, `status`
    exit 2, the device refused; writable again, all is well and the next clip is kept."""
    dead = f"https://127.0.0.1:{free_port()}"
    config = relay_config(tmp_path, tls, dead, "clips")
    async with running_relay(config, tls) as relay:
        queue = str(relay.spool / "queue")
        # In a thread: the relay runs on this loop, and must not be blocked by the test.
        await asyncio.to_thread(subprocess.run, ["mount", "--bind", queue, queue], check=True)
        try:
            await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,bind,ro", queue], check=True)
            status, body = await http_get(relay.metrics_url + "/healthz")
            report = json.loads(body)
            assert status == 503
            assert [r["code"] for r in report["reasons"]] == ["spool_unwritable"]
            assert (await status_exit(relay, tmp_path))[0] == 2
            refused = await relay.device.post_clip(PATH, b"x" * 10_000)
            assert refused.status == 503, refused.body
        finally:
            await asyncio.to_thread(subprocess.run, ["umount", queue], check=False)
        status, body = await http_get(relay.metrics_url + "/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        assert (await relay.device.post_clip(PATH, b"y" * 10_000)).status == 200
        assert len(relay.queued()) == 1
