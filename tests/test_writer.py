"""The clip writer on a real file system: what arrives in many pieces is stored whole."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import crc32c
import pytest

from relay.spool import writer as writer_module
from relay.spool.clip import ClipMeta, crc32c_b64
from relay.spool.store import DATA, SpoolStore
from relay.spool.writer import IOV_MAX, WRITE_BATCH, ClipWriter, WriteThreads
from tests.support.disk import small_filesystem


def fields() -> dict[str, object]:
    return dict(
        camera="cam",
        filename="x.mkv",
        content_type="video/x-matroska",
        received_at="2026-12-01T00:00:00+00:00",
        query={},
        source="127.0.0.1",
        origin="device",
    )


async def test_pieces_of_every_size_are_written_in_order_with_their_checksum(tmp_path: Path) -> None:
    """Tiny chunks (a chunked body of 100-byte chunks) put more pieces in one batch than
    one writev takes; empty ones and ones larger than a batch come too. Two clips share
    the write thread, their pieces interleaved."""
    store = SpoolStore(tmp_path / "spool")
    store.prepare()
    durable: list[ClipMeta] = []
    sizes = [100] * (3 * IOV_MAX) + [0, 1, WRITE_BATCH + 7, 65536, 0, 3] + [3000] * 200
    bodies = {name: [os.urandom(n) for n in sizes] for name in ("clip-1", "clip-2")}
    async with WriteThreads.running() as writes:
        writers = {name: ClipWriter(store, writes, name, fields(), durable.append) for name in bodies}
        try:
            for n in range(len(sizes)):
                for name, writer in writers.items():
                    await writer.write(bodies[name][n])
            metas = [await writer.commit() for writer in writers.values()]
        finally:
            for writer in writers.values():
                await writer.close()
    assert durable == metas
    for meta in metas:
        body = b"".join(bodies[meta.clip_id])
        assert (store.queue_dir / meta.clip_id / DATA).read_bytes() == body
        assert meta.size == len(body)
        assert meta.crc32c == crc32c_b64(crc32c.crc32c(body))
    assert not list(store.incoming_dir.iterdir())


async def test_a_clip_not_committed_is_removed_after_its_writes(tmp_path: Path) -> None:
    """close() without commit: the incoming directory goes, after the writes handed over
    (none of them reaches a closed descriptor)."""
    store = SpoolStore(tmp_path / "spool")
    store.prepare()
    async with WriteThreads.running() as writes:
        writer = ClipWriter(store, writes, "clip-1", fields(), lambda _: None)
        for _ in range(10):
            await writer.write(os.urandom(WRITE_BATCH))
        await writer.close()
        assert not list(store.incoming_dir.iterdir())
        assert not list(store.queue_dir.iterdir())


async def test_bytes_a_full_disk_refused_are_kept_and_written_after_room_is_made(tmp_path: Path) -> None:
    """The write that fills the disk fails in the write thread; the loop hears of it at a
    later write (or at commit), makes room, and flushes: the file then holds every byte
    in order, and the checksum is the body's. Nothing is lost to the failed batch, nor to
    the batches handed over after it."""
    with small_filesystem(tmp_path / "small", "2m") as fs:
        store = SpoolStore(fs / "spool")
        store.prepare()
        filler = fs / "filler"
        filler.write_bytes(b"\0" * (1792 * 1024))  # some 200 KiB left
        body = [os.urandom(WRITE_BATCH // 3) for _ in range(48)]  # 1 MiB
        refused: list[int] = []

        async def make_room(exc: OSError) -> None:
            refused.append(exc.errno or 0)
            filler.unlink()
            await writer.flush()

        async with WriteThreads.running() as writes:
            writer = ClipWriter(store, writes, "clip-1", fields(), lambda _: None)
            try:
                for piece in body:
                    try:
                        await writer.write(piece)
                    except OSError as exc:
                        await make_room(exc)
                try:
                    meta = await writer.commit()
                except OSError as exc:
                    await make_room(exc)
                    meta = await writer.commit()
            finally:
                await writer.close()
        assert refused == [errno.ENOSPC]
        whole = b"".join(body)
        assert (store.queue_dir / "clip-1" / DATA).read_bytes() == whole
        assert meta.size == len(whole)
        assert meta.crc32c == crc32c_b64(crc32c.crc32c(whole))


async def test_after_a_refused_write_the_batches_behind_it_wait_their_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the disk refused is followed by one that would fit: it must not be written
    ahead of the refused one (the clip's bytes would be out of order)."""
    monkeypatch.setattr(writer_module, "AHEAD_MAX", 1 << 30)  # both handed over unwritten
    with small_filesystem(tmp_path / "small", "1m") as fs:
        store = SpoolStore(fs / "spool")
        store.prepare()
        async with WriteThreads.running(count=1) as writes:
            gate = threading.Event()
            writes.lane().put(gate.wait)  # the only thread waits until both are handed over
            writer = ClipWriter(store, writes, "clip-1", fields(), lambda _: None)
            filler = fs / "filler"
            left = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
            filler.write_bytes(b"\0" * (left - 80 * 1024))
            big, small = os.urandom(100 * 1024), os.urandom(WRITE_BATCH)
            try:
                await writer.write(big)
                await writer.write(small)
                gate.set()
                with pytest.raises(OSError, match="No space left") as refused:
                    await writer.flush()
                assert refused.value.errno == errno.ENOSPC
                filler.unlink()
                meta = await writer.commit()
            finally:
                gate.set()
                await writer.close()
        assert (store.queue_dir / "clip-1" / DATA).read_bytes() == big + small
        assert meta.crc32c == crc32c_b64(crc32c.crc32c(big + small))
