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
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aioboto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import fleet_modes
from bench.fleet_cameras import TOKEN, Plan, camera_name
from bench.fleet_report import print_against, print_table
from bench.servers import Gate, Meter, RelayProcess, aws_cli_path, nginx, run_counted, unit_environment
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, LocalS3, free_port
from relay.server import CHACHA20_FIRST
from tests.support.harness import TLS

GB = 1e9
MiB = 1024 * 1024
BUCKET = "fleet"
RESULTS = Path(__file__).resolve().parent / "results" / "fleet.json"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Bench:
    def __init__(self, work: Path, tls: TLS, s3_port: int, args: argparse.Namespace) -> None:
        self.work = work
        self.tls = tls
        self.s3_port = s3_port
        self.args = args
        self.relay_cpus = "0" if args.one_core else None
        self.camera_cpus = "1" if args.one_core else None
        self.relay_env = {} if args.no_unit_env else unit_environment()
        # The servers' OpenSSL without AES-NI and PCLMULQDQ: a core like a Pi 4's.
        self.crypto_env = {"OPENSSL_ia32cap": "~0x200000200000000"} if args.no_aes else {}
        self.relay_env |= self.crypto_env

    def relay_config(self, cameras: int, s3_port: int) -> dict[str, Any]:
        spool = self.work / f"spool-{time.monotonic_ns()}"
        return {
            "ingest": {
                "host": "127.0.0.1",
                "port": free_port(),
                "tls_cert": str(self.tls.cert_file),
                "tls_key": str(self.tls.key_file),
                "max_connections": max(256, cameras * 2),
                # Only when asked: a relay from before the option refuses the key.
                **({"tls_prefer_chacha20": True} if self.args.tls == "chacha20" else {}),
            },
            "spool": {"dir": str(spool)},
            "s3": {
                "bucket": BUCKET,
                "endpoint_url": f"https://127.0.0.1:{s3_port}",
                "ca_bundle": str(self.tls.ca_file),
                "addressing_style": "path",
                "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY,
            },
            # Uploads resume within 2 s of the gate opening, not after a long backoff.
            "retry": {"initial_s": 0.5, "max_s": 2.0},
            "metrics": {"host": "127.0.0.1", "port": free_port()},
            "log": {"level": "warning", "format": "json"},
            "devices": {camera_name(i): {"token": TOKEN} for i in range(cameras)},
        }

    def plan(self, url: str, cameras: int, *, chunked: bool, method: str, tag: str, **extra: Any) -> Plan:
        return Plan(
            url=url,
            cameras=cameras,
            clips=self.args.clips,
            clip_s=self.args.clip_s,
            bitrate_bps=int(self.args.mbit * 1e6),
            chunked=chunked,
            method=method,
            ca_file=str(self.tls.ca_file),
            tag=tag,
            **extra,
        )

    async def cameras(self, plan: Plan) -> dict[str, Any]:
        command = [sys.executable, str(Path(__file__).with_name("fleet_cameras.py")), json.dumps(asdict(plan))]
        if self.camera_cpus:
            command = ["taskset", "-c", self.camera_cpus, *command]
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
        if process.returncode:
            raise RuntimeError(f"the camera fleet failed ({process.returncode})")
        sent: dict[str, Any] = json.loads(out)
        if sent["errors"]:
            print(f"    {len(sent['errors'])} clips failed, e.g. {sent['errors'][0]}")
        return sent

    async def measured(self, meter: Meter, plan: Plan) -> dict[str, Any]:
        user, system = meter.cpu_split()
        sent = await self.cameras(plan)
        user_after, system_after = meter.cpu_split()
        cpu = user_after - user + system_after - system
        acks = sent["acks_s"]
        return {
            "clips": len(acks),
            "failed": len(sent["errors"]),
            "bytes": sent["bytes"],
            "cpu_s": cpu,
            "cpu_s_per_gb": cpu / (sent["bytes"] / GB) if sent["bytes"] else float("nan"),
            "system_cpu_s": system_after - system,
            "ack_p50_ms": 1000 * quantile(acks, 0.50),
            "ack_p99_ms": 1000 * quantile(acks, 0.99),
            "ack_max_ms": 1000 * max(acks, default=float("nan")),
            "camera_cpu_s": sent["cpu_s"],
            "seconds": sent["seconds"],
        }

    async def upload_leg(self, relay: RelayProcess, gate: Gate, received: int) -> dict[str, Any]:
        before, started = relay.meter.cpu(), time.perf_counter()
        await gate.open()
        drained = await relay.wait_drained(600)
        cpu, seconds = relay.meter.cpu() - before, time.perf_counter() - started
        return {"drained": drained, "cpu_s": cpu, "cpu_s_per_gb": cpu / (received / GB), "seconds": seconds}

    async def fleet(self, cameras: int, gate: Gate) -> dict[str, Any]:
        print(f"  {cameras} cameras")
        result: dict[str, Any] = {"cameras": cameras}
        relay = RelayProcess(self.work, self.relay_config(cameras, gate.port), cpus=self.relay_cpus, env=self.relay_env)
        profiler = self.profile(relay, f"{cameras}-cameras")
        nginx_port = free_port()
        ciphers = CHACHA20_FIRST if self.args.tls == "chacha20" else None
        servers = nginx(
            self.work,
            nginx_port,
            self.tls.cert_file,
            self.tls.key_file,
            self.relay_cpus,
            ciphers=ciphers,
            env=self.crypto_env,
        )
        with servers as web:
            web_meter = Meter(web.pid)
            try:
                result["relay_idle_rss_mib"] = relay.meter.peak_rss_mib()
                relay_url = f"https://127.0.0.1:{relay.config['ingest']['port']}/upload/{{camera}}?accessToken={TOKEN}"
                nginx_url = f"https://127.0.0.1:{nginx_port}/upload/{{camera}}/{{file}}"
                for mode in self.args.modes:
                    chunked = mode == "chunked"
                    tag = f"{cameras}-{mode}"
                    await gate.shut()
                    plan = self.plan(relay_url, cameras, chunked=chunked, method="POST", tag=tag)
                    ingest = await self.measured(relay.meter, plan)
                    ingest["upload"] = await self.upload_leg(relay, gate, ingest["bytes"])
                    result[f"relay_{mode}"] = ingest
                    plan = self.plan(nginx_url, cameras, chunked=chunked, method="PUT", tag=tag)
                    result[f"nginx_{mode}"] = await self.measured(web_meter, plan)
                    self.report(cameras, mode, result[f"relay_{mode}"], result[f"nginx_{mode}"])
                await gate.open()
                plan = self.plan(relay_url, cameras, chunked=False, method="POST", tag=f"{cameras}-live")
                live = await self.measured(relay.meter, plan)
                live["drained"] = await relay.wait_drained(600)
                result["relay_live"] = live
                print(
                    f"    live (uploads running): ack p50 {live['ack_p50_ms']:.1f} ms p99 {live['ack_p99_ms']:.1f} ms,"
                    f" CPU {live['cpu_s_per_gb']:.2f} s/GB"
                )
                result["relay_peak_rss_mib"] = relay.meter.peak_rss_mib()
                result["nginx_peak_rss_mib"] = web_meter.peak_rss_mib()
                rss = result["relay_peak_rss_mib"], result["nginx_peak_rss_mib"]
                print(f"    peak RSS: relay {rss[0]:.0f} MiB, nginx {rss[1]:.0f} MiB")
            finally:
                relay.stop()
                if profiler:
                    profiler.wait(30)
        return result

    def profile(self, relay: RelayProcess, name: str) -> subprocess.Popen[bytes] | None:
        """py-spy sampling the relay for as long as it runs (--profile DIR): collapsed
        stacks, and a flame graph. It does not pause the relay, but its CPU shares the
        machine: take CPU figures from runs without it."""
        if not self.args.profile:
            return None
        out = Path(self.args.profile)
        out.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        command = [spy, "record", "--nonblocking", "--gil", "--rate", "200", "--format", "raw"]
        return subprocess.Popen([*command, "-o", str(out / f"{name}.txt"), "-p", str(relay.process.pid)])

    @staticmethod
    def report(cameras: int, mode: str, relay: dict[str, Any], web: dict[str, Any]) -> None:
        up = relay["upload"]
        print(
            f"    {mode:<7} relay ack p50 {relay['ack_p50_ms']:5.1f} p99 {relay['ack_p99_ms']:5.1f} ms,"
            f" ingest {relay['cpu_s_per_gb']:.2f} s/GB, upload {up['cpu_s_per_gb']:.2f} s/GB |"
            f" nginx ack p50 {web['ack_p50_ms']:5.1f} p99 {web['ack_p99_ms']:5.1f} ms, {web['cpu_s_per_gb']:.2f} s/GB"
        )

    async def big_clip(self, gate: Gate) -> dict[str, Any]:
        size = int(self.args.big_clip_gib * 1024 * MiB)
        relay = RelayProcess(self.work, self.relay_config(1, gate.port), cpus=self.relay_cpus, env=self.relay_env)
        try:
            url = f"https://127.0.0.1:{relay.config['ingest']['port']}/upload/{{camera}}?accessToken={TOKEN}"
            plan = self.plan(url, 1, chunked=False, method="POST", tag="big", clip_bytes=size, paced=False)
            plan = Plan(**{**asdict(plan), "clips": 1})
            sent = await self.measured(relay.meter, plan)
            sent["drained"] = await relay.wait_drained(900)
            sent["relay_peak_rss_mib"] = relay.meter.peak_rss_mib()
        finally:
            relay.stop()
        print(f"  one {self.args.big_clip_gib:g} GiB clip: relay peak RSS {sent['relay_peak_rss_mib']:.0f} MiB")
        return sent

    async def aws_cli(self, gate: Gate, clips: int, size: int) -> dict[str, Any]:
        """`aws s3 cp --recursive` of as many clips of the same size, through the same
        gate; its CPU from the kernel's accounting of the finished process."""
        folder = self.work / "aws-clips"
        folder.mkdir(exist_ok=True)
        for n in range(clips):
            (folder / f"clip-{n:04d}.mkv").write_bytes(os.urandom(size))
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CA_BUNDLE": str(self.tls.ca_file),
        }
        endpoint = f"https://127.0.0.1:{gate.port}"
        aws = aws_cli_path() or "aws"
        await gate.open()
        start_up = await asyncio.to_thread(
            run_counted, [aws, "s3api", "head-bucket", "--endpoint-url", endpoint, "--bucket", BUCKET], env
        )
        copy = [aws, "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url", endpoint]
        cpu = await asyncio.to_thread(run_counted, [*copy, str(folder), f"s3://{BUCKET}/aws-cli/"], env)
        sent = clips * size
        shutil.rmtree(folder)
        return {
            "clips": clips,
            "bytes": sent,
            "cpu_s": cpu,
            "start_up_cpu_s": start_up,
            "cpu_s_per_gb": cpu / (sent / GB),
            "cpu_s_per_gb_without_start_up": (cpu - start_up) / (sent / GB),
        }


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
        "--against", metavar="DIR", help="also run the relay in DIR (e.g. a worktree of an older commit)"
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
