"""The clip writer on a real file system: what arrives in many pieces is stored whole."""

from __future__ import annotations

import os
from pathlib import Path

import crc32c

from relay.spool.clip import ClipMeta, crc32c_b64
from relay.spool.store import DATA, SpoolStore
from relay.spool.writer import IOV_MAX, WRITE_BATCH, ClipWriter


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
    one writev takes; empty ones and ones larger than a batch come too."""
    store = SpoolStore(tmp_path / "spool")
    store.prepare()
    durable: list[ClipMeta] = []
    sizes = [100] * (3 * IOV_MAX) + [0, 1, WRITE_BATCH + 7, 65536, 0, 3]
    pieces = [os.urandom(n) for n in sizes]
    writer = ClipWriter(store, "clip-1", fields(), durable.append)
    try:
        for piece in pieces:
            await writer.write(piece)
        meta = await writer.commit()
    finally:
        writer.discard()
    body = b"".join(pieces)
    assert (store.queue_dir / "clip-1" / DATA).read_bytes() == body
    assert meta.size == len(body)
    assert durable == [meta]
    assert meta.crc32c == crc32c_b64(crc32c.crc32c(body))
