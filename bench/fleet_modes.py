"""The fleet benchmark's other two questions: a change measured against an older
checkout in the same run (``--against``), and how many cameras one core takes
(``--one-core``)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from bench.fleet_bench import Bench
from bench.fleet_cameras import TOKEN
from bench.servers import Gate, RelayProcess


async def settled_disk() -> None:
    """Once the dirty pages of whatever ran before are on disk (one ``sync``)."""
    await asyncio.to_thread(os.sync)


async def against(bench: Bench, gate: Gate) -> dict[str, Any]:
    """This relay and the one in ``--against DIR`` (an older checkout), fresh processes,
    alternating, on the same load with uploads paused, then uploads resumed: the
    before and after of a change, measured in one run.

    Each relay starts on a settled disk (everything the last one and S3 wrote synced
    first), and the order turns each round (before-after, after-before): a relay that
    always came second ingested while the first one's gigabyte was still being written
    out, and its ack p99 was 2-58 times the first's whichever code it ran."""
    rows: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    sides = [("before", Path(bench.args.against)), ("after", None)]
    for cameras in bench.args.cameras:
        for n in range(bench.args.rounds):
            for name, source in sides if n % 2 == 0 else sides[::-1]:
                await settled_disk()
                config = bench.relay_config(cameras, gate.port)
                relay = RelayProcess(bench.work, config, cpus=bench.relay_cpus, env=bench.relay_env, source=source)
                try:
                    url = f"https://127.0.0.1:{config['ingest']['port']}/upload/{{camera}}?accessToken={TOKEN}"
                    for mode in bench.args.modes:
                        await gate.shut()
                        tag = f"{name}-{cameras}-{mode}-{n}"
                        plan = bench.plan(url, cameras, chunked=mode == "chunked", method="POST", tag=tag)
                        row = await bench.measured(relay.meter, plan)
                        row["upload"] = await bench.upload_leg(relay, gate, row["bytes"])
                        row.update(cameras=cameras, mode=mode, peak_rss_mib=relay.meter.peak_rss_mib())
                        rows[name].append(row)
                        print(
                            f"  {name:<6} {cameras} cameras {mode:<7} ack p50 {row['ack_p50_ms']:5.1f}"
                            f" p99 {row['ack_p99_ms']:6.1f} ms, ingest {row['cpu_s_per_gb']:5.2f} s/GB,"
                            f" upload {row['upload']['cpu_s_per_gb']:.2f} s/GB,"
                            f" peak RSS {row['peak_rss_mib']:.0f} MiB"
                        )
                finally:
                    relay.stop()
    return rows


async def one_core(bench: Bench) -> list[dict[str, Any]]:
    """The relay alone on core 0 (taskset), uploads running straight to S3; more
    cameras each round, each judged: ack p99 within 50 ms, no clip failed, uploads
    keeping up (the backlog clears within one clip's length once the cameras stop).
    Stops when clips fail, uploads fall behind, or the core is full. With ``--against
    DIR`` the relay is that checkout's (the same questions asked of older code)."""
    rows = []
    source = Path(bench.args.against) if bench.args.against else None
    for cameras in bench.args.cameras:
        await settled_disk()
        config = bench.relay_config(cameras, bench.s3_port)
        relay = RelayProcess(bench.work, config, cpus="0", env=bench.relay_env, source=source)
        try:
            url = f"https://127.0.0.1:{relay.config['ingest']['port']}/upload/{{camera}}?accessToken={TOKEN}"
            plan = bench.plan(url, cameras, chunked=False, method="POST", tag=f"{cameras}-one-core")
            row = await bench.measured(relay.meter, plan)
            started = time.perf_counter()
            row["drained"] = await relay.wait_drained(600)
            row["backlog_s"] = time.perf_counter() - started
            row["cameras"] = cameras
            row["relay_peak_rss_mib"] = relay.meter.peak_rss_mib()
            row["core_busy"] = row["cpu_s"] / row["seconds"]
        finally:
            relay.stop()
        problems = [
            *([f"{row['failed']} clips failed"] if row["failed"] else []),
            *([f"ack p99 over 50 ms ({row['ack_p99_ms']:.0f})"] if row["ack_p99_ms"] > 50 else []),
            *(["uploads fall behind"] if row["backlog_s"] > bench.args.clip_s else []),
        ]
        row["ok"], row["problems"] = not problems, problems
        rows.append(row)
        print(
            f"  {cameras} cameras on one core: ack p50 {row['ack_p50_ms']:.1f} p99 {row['ack_p99_ms']:.1f} ms,"
            f" core {100 * row['core_busy']:.0f} % busy, backlog cleared {row['backlog_s']:.1f} s after the last"
            f" clip: {', '.join(problems) or 'keeps up'}"
        )
        # Past a late answer the next size still shows how the core copes; past
        # failures or a backlog it cannot.
        if row["failed"] or row["backlog_s"] > bench.args.clip_s or row["core_busy"] > 0.95:
            break
    return rows
