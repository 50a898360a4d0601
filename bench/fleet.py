"""Fleet benchmark: many cameras streaming clips at real-time pace, the relay against
nginx on the same load in the same run, and the upload leg against the AWS CLI.

    make bench                         # or: .venv/bin/python bench/fleet.py
    .venv/bin/python bench/fleet.py --cameras 32 --clips 2
    .venv/bin/python bench/fleet.py --one-core     # how many cameras one core takes

For each fleet size (8, 32, 128 cameras; 15 s clips at 4 Mbit/s; fixed-length and
chunked), in this order, alternating:
  relay, uploads paused  ack latency; CPU per GB of ingest alone (S3 behind a shut gate)
  relay, upload leg      the gate opened: CPU per GB until the spool is empty
  nginx                  the same cameras, TLS WebDAV PUT, one worker, no fsync
  relay, live            uploads running while the cameras send (fixed-length)
Then `aws s3 cp --recursive` sends the bytes of the 32-camera fleet through the same
gate over HTTPS (its start-up measured apart), and one 2 GiB clip goes through a fresh
relay to show memory does not grow with clip size. Every relay and nginx is started
fresh per fleet size, so each peak RSS is that fleet's. The cameras run in a process of
their own (bench/fleet_cameras.py). Ratios are from one run; absolute figures on a
shared machine are noise. Raw numbers: bench/results/fleet.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import aioboto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import fleet_modes
from bench.fleet_bench import BUCKET, RESULTS, Bench
from bench.fleet_report import print_against, print_table
from bench.servers import Gate, aws_cli_path
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3, free_port
from tests.support.harness import TLS


async def main(args: argparse.Namespace) -> None:
    if not shutil.which("nginx"):
        sys.exit("nginx is the reference: install it (apt-get install nginx-light) and run again")
    if args.one_core:
        os.sched_setaffinity(0, {1})  # the cameras, S3 and the gate: off the relay's core
    work = Path(tempfile.mkdtemp(prefix="axis-relay-fleet-"))
    results: dict[str, Any] = {"args": vars(args), "fleets": []}
    try:
        tls = TLS.create(work)
        local = LocalS3(data_dir=work / "s3", tls_cert=tls.cert_file, tls_key=tls.key_file)
        async with local.running():
            session = aioboto3.Session(ACCESS_KEY, SECRET_KEY, region_name="us-east-1")
            async with session.client("s3", endpoint_url=local.endpoint_url, verify=str(tls.ca_file)) as s3:
                await s3.create_bucket(Bucket=BUCKET)
            bench = Bench(work, tls, local.ports["s3.https"], args)
            if args.one_core:
                results["one_core"] = await fleet_modes.one_core(bench)
            elif args.against:
                async with Gate(free_port(), local.ports["s3.https"]).running() as gate:
                    results["against"] = await fleet_modes.against(bench, gate)
            else:
                async with Gate(free_port(), local.ports["s3.https"]).running() as gate:
                    print(f"{args.clip_s:g} s clips at {args.mbit:g} Mbit/s, {args.clips} per camera")
                    for cameras in args.cameras:
                        results["fleets"].append(await bench.fleet(cameras, gate))
                    if aws_cli_path() and not args.no_aws:
                        reference = next((f for f in results["fleets"] if f["cameras"] == 32), results["fleets"][-1])
                        clip_bytes = int(args.mbit * 1e6 / 8 * args.clip_s)
                        results["aws_cli"] = await bench.aws_cli(gate, reference["cameras"] * args.clips, clip_bytes)
                    else:
                        print("  the AWS CLI is not installed (pip install awscli): no upload reference")
                    if args.big_clip_gib:
                        results["big_clip"] = await bench.big_clip(gate)
    finally:
        if args.keep:
            print(f"kept: {work} (the relays' logs, the spools)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    RESULTS.parent.mkdir(exist_ok=True)
    out = Path(args.json) if args.json else RESULTS.with_stem("fleet-one-core") if args.one_core else RESULTS
    out.write_text(json.dumps(results, indent=1))
    if "against" in results:
        print_against(results["against"])
    elif not args.one_core:
        print_table(results)
    print(f"raw numbers: {out}")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cameras",
        type=lambda s: [int(n) for n in s.split(",")],
        help="fleet sizes (default 8,32,128; with --one-core 16,32,64,96,128,192)",
    )
    parser.add_argument("--clips", type=int, default=2, help="clips per camera per round")
    parser.add_argument("--clip-s", type=float, default=15.0)
    parser.add_argument("--mbit", type=float, default=4.0)
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["fixed", "chunked"])
    parser.add_argument("--big-clip-gib", type=float, default=2.0, help="0 = skip")
    parser.add_argument("--no-aws", action="store_true")
    parser.add_argument(
        "--tls", choices=["default", "chacha20"], default="default", help="chacha20: tls_prefer_chacha20"
    )
    parser.add_argument("--no-aes", action="store_true", help="the servers' OpenSSL without AES-NI (a Pi 4's core)")
    parser.add_argument(
        "--one-core", action="store_true", help="how many cameras the relay takes on core 0 (the rest on core 1)"
    )
    parser.add_argument("--profile", metavar="DIR", help="sample the relay with py-spy; stacks go to DIR")
    parser.add_argument("--no-unit-env", action="store_true", help="run the relay without the unit's Environment=")
    parser.add_argument(
        "--against",
        metavar="DIR",
        help="also run the relay in DIR (e.g. a worktree of an older commit); with --one-core: only that one",
    )
    parser.add_argument("--rounds", type=int, default=3, help="with --against: rounds of each")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, spools)")
    parser.add_argument("--json", help=f"where the raw numbers go (default {RESULTS})")
    args = parser.parse_args()
    if args.cameras is None:
        args.cameras = [16, 32, 64, 96, 128, 192] if args.one_core else [8, 32, 128]
    return args


if __name__ == "__main__":
    asyncio.run(main(arguments()))
