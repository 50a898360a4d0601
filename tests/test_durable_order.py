""" "A 200 means the clip is on disk": the order of the durable steps, seen from outside.

SIGKILL leaves the page cache in place, so a crash test cannot tell written bytes from
fsynced ones. Here a real relay process runs under strace, and the system calls for one
clip are read in the order the kernel saw them: the clip's data fsynced, its metadata
fsynced and renamed into place, the clip's directory fsynced, the directory renamed from
incoming/ into queue/, and queue/ fsynced, all before the status line goes out.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
from pathlib import Path

import pytest

from tests.support.harness import PATH, TLS, raw_config, write_config
from tests.support.relay_process import relay_process

STRACE = shutil.which("strace")


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (make test installs it)")
async def test_every_durable_step_comes_before_the_200(tmp_path: Path, tls: TLS) -> None:
    raw = raw_config(tmp_path, tls, "https://127.0.0.1:1", "clips")  # nothing uploads: only ingest is traced
    del raw["ingest"]["tls_cert"], raw["ingest"]["tls_key"]  # plain HTTP: the status line is readable
    trace = tmp_path / "strace.txt"
    calls = "fsync,fdatasync,rename,renameat,renameat2,write,writev,sendto,sendmsg"
    async with relay_process(write_config(tmp_path / "relay.toml", raw), None) as relay:
        assert relay.pid is not None
        # Attached to the running relay, all its threads and those it starts (-f).
        tracer = await asyncio.create_subprocess_exec(
            str(STRACE), "-f", "-y", "-s", "48", "-e", f"trace={calls}", "-o", str(trace), "-p", str(relay.pid),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert tracer.stderr is not None
        attached = await asyncio.wait_for(tracer.stderr.readline(), 30)
        assert b"attached" in attached, attached
        answer = await relay.device.post_clip(PATH, b"c" * 50_000)
        assert answer.status == 200
        clip_id = json.loads(answer.body)["clip_id"]
        tracer.send_signal(signal.SIGINT)  # detach, and write out what was seen
        await asyncio.wait_for(tracer.communicate(), 30)
        assert await relay.stop() == 0
    lines = trace.read_text().splitlines()

    def first(pattern: str) -> int:
        found = [n for n, line in enumerate(lines) if re.search(pattern, line)]
        assert found, f"no system call matches {pattern!r}"
        return found[0]

    incoming, queue = rf"spool/incoming/{clip_id}", "spool/queue"
    steps = [
        ("fsync(data)", first(rf"f(data)?sync\(\d+<[^>]*{incoming}/data>")),
        ("fsync(meta)", first(rf"f(data)?sync\(\d+<[^>]*{incoming}/meta\.json[^>]*>")),
        ("rename(meta)", first(rf"rename\w*\(.*{incoming}/meta\.json.*{incoming}/meta\.json")),
        ("fsync(clip dir)", first(rf"f(data)?sync\(\d+<[^>]*{incoming}>")),
        ("rename(clip dir)", first(rf"rename\w*\(.*{incoming}\".*{queue}/{clip_id}\"")),
        ("fsync(queue/)", first(rf"f(data)?sync\(\d+<[^>]*{queue}>")),
        ("the 200", first(r"(write|writev|sendto|sendmsg)\(.*HTTP/1\.1 200")),
    ]
    order = [name for name, _ in sorted(steps, key=lambda step: step[1])]
    assert order == [name for name, _ in steps], order
