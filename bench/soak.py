"""The back-fill soak at a real cadence: several cameras sending a clip every 15 s with
random drops, the relay killed with SIGKILL, an S3 outage; then the fraction of each
camera's time that is in S3 (frame by frame), and the gaps by state.

    .venv/bin/python bench/soak.py                  # 4 cameras, 15 s, 24 clips (6 min)
    .venv/bin/python bench/soak.py --cadence 2 --clips 30

The target is 100 % of the fillable time: the time a camera recorded to its card (one
of them restarts mid-run, and a few seconds of it exist nowhere). Raw figures go to
bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.dev.local_s3 import LocalS3
from tests.support.harness import TLS, s3_client
from tests.support.soak import soak


async def main(cameras: int, cadence_s: float, clips: int, drop_rate: float, seed: int) -> int:
    work = Path(tempfile.mkdtemp(prefix="relay-soak-"))
    tls = TLS.create(work)
    server = LocalS3(data_dir=work / "s3", tls_cert=tls.cert_file, tls_key=tls.key_file)
    async with server.running(), s3_client(server.endpoint_url, tls) as s3:
        bucket = f"soak-{uuid.uuid4().hex[:8]}"
        await s3.create_bucket(Bucket=bucket)
        (work / "relay").mkdir()
        result = await soak(
            work / "relay",
            tls,
            server.endpoint_url,
            s3,
            bucket,
            cameras=cameras,
            cadence_s=cadence_s,
            clips=clips,
            drop_rate=drop_rate,
            seed=seed,
            settle_timeout_s=max(120.0, cadence_s * clips),
        )
    print(f"soak: {cameras} cameras, a clip every {cadence_s:g} s, {clips} clips each, drop rate {drop_rate:.0%}")
    print(
        f"      {result.clips_made} clips made, {result.clips_dropped} dropped by the cameras, "
        f"{result.clips_refused} sent while the relay was killed ({result.kill_at}), S3 out for {result.outage_s} s"
    )
    print(f"{'camera':<10} {'time s':>8} {'in S3 s':>8} {'never recorded s':>17} {'of fillable':>12}")
    for name, c in result.coverage.items():
        print(f"{name:<10} {c.seconds:>8.1f} {c.in_s3_s:>8.1f} {c.unrecorded_s:>17.1f} {c.fraction_of_fillable:>12.2%}")
    print("gaps by state: " + ", ".join(f"{state} {n}" for state, n in sorted(result.gaps.items())))
    print(f"wall time {result.wall_s} s")
    raw = asdict(result) | {
        "gaps": dict(result.gaps),
        "cameras": cameras,
        "cadence_s": cadence_s,
        "clips": clips,
        "drop_rate": drop_rate,
    }
    out = Path(__file__).parent / "results" / "soak.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(raw, indent=1, default=str))
    print(f"raw figures: {out}")
    return 0 if all(c.fraction_of_fillable == 1.0 for c in result.coverage.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--cadence", type=float, default=15.0, help="seconds between clips (and each clip's length)")
    parser.add_argument("--clips", type=int, default=24, help="clips per camera")
    parser.add_argument("--drop-rate", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.cameras, args.cadence, args.clips, args.drop_rate, args.seed)))
