"""contrib/: the Grafana dashboard and the alert rules name only metrics the relay
exports, and the relay's /metrics passes `promtool check metrics` (the rules themselves
are checked and unit-tested by promtool in `make lint`)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import yaml

from tests.support.harness import PATH, RunningRelay, http_get, wait_until

CONTRIB = Path(__file__).parent.parent / "contrib"
_NAME = re.compile(r"\baxis_relay_[a-z0-9_]+")
_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


async def exported(relay: RunningRelay) -> tuple[set[str], str]:
    assert (await relay.device.post_clip(PATH, b"x" * 100)).status == 200
    await wait_until(lambda: relay.stats.clips_uploaded == 1, what="a clip uploaded")
    _, text = await http_get(relay.metrics_url + "/metrics")
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
            if kind == "histogram":
                names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names, text


def named_in(text: str) -> set[str]:
    return set(_NAME.findall(text))


async def test_dashboard_and_rules_name_only_exported_metrics(relay: RunningRelay) -> None:
    names, _ = await exported(relay)
    dashboard = json.loads((CONTRIB / "grafana" / "axis-relay.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    rules = yaml.safe_load((CONTRIB / "prometheus" / "axis-relay-rules.yml").read_text())
    alerts = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} >= {
        "AxisRelayFailing",
        "AxisRelayDegraded",
        "AxisRelayDown",
        "AxisRelayNotUploading",
        "AxisRelayBacklogOld",
        "AxisRelayQuarantine",
        "AxisRelayDiskLow",
        "AxisRelayCameraSilent",
        "AxisRelayGapsUnfilled",
    }
    used = set().union(*(named_in(e) for e in exprs + alerts))
    assert used - names == set(), f"not exported: {sorted(used - names)}"
    # The dashboard shows what operators asked for: per camera, backlog, disk, gaps.
    shown = set().union(*(named_in(e) for e in exprs))
    assert {
        "axis_relay_device_clips_total",
        "axis_relay_device_bytes_total",
        "axis_relay_oldest_pending_age_seconds",
        "axis_relay_upload_retries_total",
        "axis_relay_quarantine_clips",
        "axis_relay_spool_free_bytes",
        "axis_relay_gaps",
        "axis_relay_device_last_clip_timestamp_seconds",
    } <= shown


async def test_metrics_pass_promtool_check_metrics(relay: RunningRelay) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    _, text = await exported(relay)
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    assert proc.returncode == 0, out.decode()
    assert out.decode().strip() == "", out.decode()  # no lint problem named
