"""The fleet benchmark's machinery: the relay's config for N cameras, one measured
round of cameras, the upload leg, the references (bench/fleet.py runs them)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fleet_cameras import TOKEN, Plan, camera_name
from bench.servers import Gate, Meter, RelayProcess, aws_cli_path, nginx, run_counted, unit_environment
from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, free_port
from relay.ingest.tls import CHACHA20_FIRST
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
                # Only where the default (256) is too few, and chacha20 only when asked: a
                # relay from before the option refuses the key (--against an older checkout).
                **({"max_connections": cameras * 2} if cameras * 2 > 256 else {}),
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
