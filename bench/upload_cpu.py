"""CPU per GB of the upload leg alone, this checkout against another, in one run.

    .venv/bin/python bench/upload_cpu.py --against /tmp/before [--clips 48] [--rounds 8]

Each round, a fresh process per side (the other checkout imported ahead of this one)
PutObjects the same clips, two at a time as the relay's two upload workers do, through
the relay's own S3 client and request bodies (``relay.upload.s3.open_client``,
``FileRange.sending``), to SeaweedFS over TLS on loopback, and reports its own CPU
seconds (user + system, all threads) per GB. The clips were just written, so they are
in the page cache, as a clip just received is. The order turns each round. The fleet
benchmark's upload figure also carries the spool, the ledger and the queue; this one
isolates the bodies and the HTTP client. Quote the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CLIP_BYTES = 7_500_000  # 15 s at 4 Mbit/s
BUCKET = "upload-cpu"


async def one_side(endpoint: str, ca_file: str, clips: Path, tag: str) -> dict[str, float | str]:
    """In the child process: upload every clip once, measure this process. The relay
    imported is the side's own: the bench's checkout is not put on the path here."""
    from pydantic import SecretStr

    from relay.config import S3Config
    from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY
    from relay.upload.body import FileRange
    from relay.upload.s3 import open_client

    config = S3Config(
        bucket=BUCKET,
        endpoint_url=endpoint,
        ca_bundle=Path(ca_file),
        access_key_id=ACCESS_KEY,
        secret_access_key=SecretStr(SECRET_KEY),
        addressing_style="path",
    )
    files = sorted(clips.iterdir())
    async with open_client(config) as (client, _):
        await client.put_object(Bucket=BUCKET, Key=f"warm-up/{tag}", Body=b"x")  # the connection, the TLS
        before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        waiting = list(files)

        async def worker() -> None:
            while waiting:
                path = waiting.pop()
                body = FileRange(path, 0, path.stat().st_size)
                async with body.sending(path.name, stall_warning_s=30, give_up_s=120) as stream:
                    await client.put_object(Bucket=BUCKET, Key=f"{tag}/{path.name}", Body=stream)

        await asyncio.gather(worker(), worker())
        after = resource.getrusage(resource.RUSAGE_SELF)
    gb = sum(p.stat().st_size for p in files) / 1e9
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    import relay

    return {"cpu_s_per_gb": cpu / gb, "wall_s": time.perf_counter() - began, "relay": str(relay.__file__)}


async def main(args: argparse.Namespace) -> None:
    from relay.dev.local_s3 import LocalS3
    from tests.support.harness import TLS, s3_client

    with tempfile.TemporaryDirectory(prefix="upload-cpu-") as tmp:
        work = Path(tmp)
        tls = TLS.create(work)
        clips = work / "clips"
        clips.mkdir()
        for n in range(args.clips):
            (clips / f"clip-{n:03d}.mkv").write_bytes(os.urandom(CLIP_BYTES))
        server = LocalS3(data_dir=work / "s3", tls_cert=tls.cert_file, tls_key=tls.key_file)
        async with server.running():
            async with s3_client(server.endpoint_url, tls) as s3:
                await s3.create_bucket(Bucket=BUCKET)
            here = Path(__file__).resolve().parent.parent
            sides = [("before", Path(args.against).resolve()), ("after", here)]
            figures: dict[str, list[float]] = {"before": [], "after": []}
            for n in range(args.rounds):
                for name, source in sides if n % 2 == 0 else sides[::-1]:
                    command = [sys.executable, __file__, "--child", server.endpoint_url, str(tls.ca_file), str(clips)]
                    env = {**os.environ, "PYTHONPATH": str(source)}
                    done = subprocess.run(
                        [*command, f"{name}-{n}-{uuid.uuid4().hex[:6]}"],
                        env=env,
                        cwd=source,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    row = json.loads(done.stdout)
                    # Both sides measuring one checkout would look like no change.
                    assert Path(row["relay"]).is_relative_to(source), (name, row["relay"])
                    figures[name].append(row["cpu_s_per_gb"])
                    print(f"  {name:<6} round {n}: {row['cpu_s_per_gb']:.2f} CPU s/GB", flush=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    print(
        f"upload leg CPU s/GB, medians of {args.rounds}: before {medians['before']:.2f}, "
        f"after {medians['after']:.2f} ({medians['after'] / medians['before']:.2f}x)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        endpoint, ca_file, clips, tag = sys.argv[2:6]
        print(json.dumps(asyncio.run(one_side(endpoint, ca_file, Path(clips), tag))))
    else:
        # Here only: a child imports the relay of the side it measures (PYTHONPATH).
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--against", required=True, help="another checkout of the relay (a git worktree)")
        parser.add_argument("--clips", type=int, default=48)
        parser.add_argument("--rounds", type=int, default=8)
        asyncio.run(main(parser.parse_args()))
