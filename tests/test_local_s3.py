"""The embedded S3 server of `make run` and the tests: it survives losing a port race."""

from __future__ import annotations

import socket
from pathlib import Path

from relay.dev.local_s3 import LocalS3
from tests.support.harness import s3_client


async def test_a_port_taken_before_seaweedfs_binds_it_is_replaced(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        server = LocalS3(data_dir=tmp_path)
        server.ports["s3"] = port  # as if another process bound it after it was picked
        async with server.running():
            assert server.ports["s3"] != port
            async with s3_client(server.endpoint_url, None) as s3:
                await s3.create_bucket(Bucket="after-the-race")
                assert "after-the-race" in [b["Name"] for b in (await s3.list_buckets())["Buckets"]]
    assert "address already in use" in (tmp_path / "weed.log").read_text()
