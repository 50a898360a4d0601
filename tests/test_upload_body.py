"""Upload bodies as aiohttp sends them (relay.upload.body): a range of a spooled file,
read a SEND_PIECE at a time, to a real aiohttp server on loopback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiobotocore._endpoint_helpers import _IOBaseWrapper
from aiohttp import web
from aiohttp.payload import PAYLOAD_REGISTRY

from relay.upload.body import SEND_PIECE, FileRange, FileWindowPayload
from tests.support.harness import serving_app

BOUND = aiohttp.ClientTimeout(total=10)  # a body short of its Content-Length fails, not hangs


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server that keeps each body it is sent; /moved answers 307 to /kept, as a
    redirect would, so the client sends the same payload twice."""
    bodies: list[bytes] = []

    async def kept(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(text="ok")

    async def moved(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        raise web.HTTPTemporaryRedirect("/kept")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_put("/kept", kept)
    app.router.add_put("/moved", moved)
    async with serving_app(app) as url:
        yield url, bodies


def spooled(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / "data"
    path.write_bytes(data)
    return path, data


def test_a_window_is_sent_through_its_own_payload_bare_or_wrapped_by_the_s3_client(tmp_path: Path) -> None:
    path, _ = spooled(tmp_path, 10)
    with FileRange(path, 0, 10).open() as window:
        assert type(PAYLOAD_REGISTRY.get(window)) is FileWindowPayload
        # aiobotocore wraps a file-like body in a proxy before aiohttp sees it.
        assert type(PAYLOAD_REGISTRY.get(_IOBaseWrapper(window))) is FileWindowPayload


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 0), (0, 1), (7, SEND_PIECE - 1), (0, SEND_PIECE), (1000, 3 * SEND_PIECE + 17)],
)
async def test_every_byte_of_the_range_and_no_other_arrives(
    tmp_path: Path, receiver: tuple[str, list[bytes]], offset: int, length: int
) -> None:
    url, bodies = receiver
    path, data = spooled(tmp_path, 4 * SEND_PIECE)
    body = FileRange(path, offset, length)
    async with aiohttp.ClientSession(timeout=BOUND) as session:
        for wrap in (False, True):
            with body.open() as window:
                sent = _IOBaseWrapper(window) if wrap else window
                headers = {"Content-Length": str(length)}
                async with session.put(f"{url}/kept", data=sent, headers=headers) as answer:
                    assert answer.status == 200
    assert bodies == [data[offset : offset + length]] * 2


async def test_a_redirected_request_sends_the_whole_range_again(
    tmp_path: Path, receiver: tuple[str, list[bytes]]
) -> None:
    url, bodies = receiver
    path, data = spooled(tmp_path, 2 * SEND_PIECE + 5)
    body = FileRange(path, 3, 2 * SEND_PIECE)
    async with aiohttp.ClientSession(timeout=BOUND) as session:
        with body.open() as window:
            headers = {"Content-Length": str(body.length)}
            async with session.put(f"{url}/moved", data=window, headers=headers) as answer:
                assert answer.status == 200
    assert bodies == [data[3 : 3 + body.length]] * 2


def test_a_window_reads_its_range_in_pieces_and_seeks_within_it(tmp_path: Path) -> None:
    path, data = spooled(tmp_path, 100)
    with FileRange(path, 10, 50).open() as window:
        assert window.read(20) == data[10:30]
        assert window.read() == data[30:60]
        assert window.read(5) == b""
        window.seek(-5, os.SEEK_END)
        assert window.read(100) == data[55:60]
        window.seek(0)
        assert window.readall() == data[10:60]
        window.seek(0)
        buffer = bytearray(30)
        assert window.readinto(buffer) == 30
        assert buffer == data[10:40]
        assert window.readinto(buffer) == 20  # what is left of the window, not of the file
        assert buffer[:20] == data[40:60]


def evicted(path: Path) -> bool:
    """Drop ``path``'s pages from the page cache; False where the filesystem keeps them
    (tmpfs: the cache is where its files live). The whole file: a range can stay in a
    large folio that reaches beyond it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fd)


def test_a_window_reads_on_the_loop_only_what_the_page_cache_holds(tmp_path: Path) -> None:
    path, data = spooled(tmp_path, 2 * SEND_PIECE)
    with FileRange(path, 0, len(data)).open() as window:
        cached = window.read_cached(SEND_PIECE)  # just written: in the cache
        assert cached is not None
        assert bytes(cached) == data[:SEND_PIECE]
        if not evicted(path):
            pytest.skip("this filesystem keeps every page cached")
        assert window.read_cached(SEND_PIECE) is None  # from the disk: a worker thread's read
        assert window.tell() == SEND_PIECE
        assert window.read(SEND_PIECE) == data[SEND_PIECE:]
        assert window.read_cached(1) == bytearray()


async def test_a_body_on_disk_arrives_whole(tmp_path: Path, receiver: tuple[str, list[bytes]]) -> None:
    url, bodies = receiver
    path, data = spooled(tmp_path, 4 * SEND_PIECE)
    if not evicted(path):
        pytest.skip("this filesystem keeps every page cached")
    body = FileRange(path, 100, len(data) - 200)
    async with aiohttp.ClientSession(timeout=BOUND) as session:
        with body.open() as window:
            headers = {"Content-Length": str(body.length)}
            async with session.put(f"{url}/kept", data=window, headers=headers) as answer:
                assert answer.status == 200
    assert bodies == [data[100:-100]]
