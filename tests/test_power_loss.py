""" "A 200 means the clip is on disk", tested by losing power.

The spool lives on an ext4 file system on a loop device. Right after the devices got
their answers, the relay is frozen (SIGSTOP, so it writes nothing more) and the loop
device's backing file is copied: that copy holds exactly what reached the block device,
and nothing that sat only in the page cache. The relay is killed, the copy is mounted
(ext4 replays its journal, as after a power cut) and a new relay starts on it: every
clip that got a 200 must reach S3, byte-identical.

The file system is mounted with commit=60 (a long journal interval, as SD-card setups
use to save wear) and data=writeback (no data flushed by a journal commit): ext4 then
writes nothing on its own for a minute, so what is on the device is what the relay's
own fsyncs put there. With the spool's fsyncs removed, the clips are not in the copy and
this test fails. One fsync alone removed is not seen here: ext4 has one journal, so the
next fsync (the ledger's, the next clip's) commits the earlier one's work too; the order
of each step before the 200 is checked by test_durable_order.py instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.dev.local_s3 import LocalS3
from tests.support.harness import PATH, TLS, clip_name, list_keys, object_bytes, raw_config, wait_until, write_config
from tests.support.relay_process import relay_process

IMAGE_BYTES = 256 * 1024 * 1024


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)}: {result.stderr.strip()}")
    return result.stdout.strip()


@contextlib.contextmanager
def mounted(image: Path, where: Path) -> Iterator[Path]:
    """The image on a loop device, mounted at ``where`` (60 s commit, data=writeback)."""
    if shutil.which("losetup") is None or not Path("/dev/loop-control").exists():
        pytest.skip("no loop devices here (needs root and /dev/loop-control)")
    device = _run("losetup", "--find", "--show", str(image))
    try:
        where.mkdir(exist_ok=True)
        _run("mount", "-t", "ext4", "-o", "commit=60,data=writeback", device, str(where))
        try:
            yield where
        finally:
            subprocess.run(["umount", str(where)], check=False)
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


async def test_every_acknowledged_clip_survives_a_power_cut(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, s3: Any, bucket: str
) -> None:
    image, copy = tmp_path / "disk.img", tmp_path / "after-power-cut.img"
    with image.open("wb") as f:
        f.truncate(IMAGE_BYTES)
    _run("mkfs.ext4", "-q", "-F", str(image))
    clips = {f"clip-{n}.mkv": os.urandom(size) for n, size in enumerate([300_000, 2_500_000, 6_000_000, 40_000])}

    with mounted(image, tmp_path / "disk") as disk:
        raw = raw_config(tmp_path, tls, "https://127.0.0.1:1", bucket)  # nothing uploads before the cut
        raw["spool"]["dir"] = str(disk / "spool")
        async with relay_process(write_config(tmp_path / "before.toml", raw), tls.client_context()) as relay:
            for n, (name, clip) in enumerate(clips.items()):
                answer = await relay.device.post_clip(PATH, clip, filename=name, chunked=n % 2 == 1)
                assert answer.status == 200, answer.body
            assert relay.pid is not None
            # The power goes: the relay writes nothing more; the device holds what it holds.
            os.kill(relay.pid, signal.SIGSTOP)
            await asyncio.to_thread(shutil.copyfile, image, copy)
            await relay.kill()

    with mounted(copy, tmp_path / "recovered") as recovered:
        raw = raw_config(tmp_path, tls, s3_server.endpoint_url, bucket)
        raw["spool"]["dir"] = str(recovered / "spool")
        async with relay_process(write_config(tmp_path / "after.toml", raw), tls.client_context()) as relay:
            await wait_until(
                lambda: len(relay.named("clip_uploaded")) >= len(clips), timeout=60, what="every acknowledged clip"
            )
            assert await relay.stop() == 0
        assert not relay.named("clip_quarantined")

    stored = {clip_name(key): await object_bytes(s3, bucket, key) for key in await list_keys(s3, bucket)}
    assert stored == clips
