"""``GET /`` on the metrics listener: one self-contained HTML page a technician on site
reads without Grafana, refreshing itself. Per camera: its last clip, clips today,
clips waiting, quarantined (with the reasons), gaps and back-fill; and the relay's
health, uptime and disk. Read-only; no external assets; every value escaped."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from relay.spool.clip import ledger_time
from relay.spool.ledger import Ledger

REFRESH_S = 10
# Quarantine reasons shown per camera (the rest: `axis-relay spool list`).
REASONS_SHOWN = 3


@dataclass
class CameraRow:
    camera: str
    today: int = 0
    waiting: int = 0
    quarantined: int = 0
    backfilled_today: int = 0
    last_received: str | None = None
    reasons: list[str] = field(default_factory=list)


def camera_rows(ledger: Ledger, today: datetime) -> dict[str, CameraRow]:
    """From the ledger: only today's rows and those still waiting or quarantined."""
    rows: dict[str, CameraRow] = {}
    for camera, today_n, backfilled, last in ledger.db.execute(
        "SELECT camera, sum(origin = 'device'), sum(origin = 'backfill'), max(received_at) FROM clip "
        "WHERE received_at >= ? GROUP BY camera",
        (ledger_time(today),),
    ):
        rows[camera] = CameraRow(camera, today=today_n, backfilled_today=backfilled, last_received=last)
    for camera, state, count in ledger.db.execute(
        "SELECT camera, state, count(*) FROM clip WHERE state IN ('queued', 'quarantined') GROUP BY camera, state"
    ):
        row = rows.setdefault(camera, CameraRow(camera))
        if state == "queued":
            row.waiting = count
        else:
            row.quarantined = count
    for camera, reason in ledger.db.execute(
        "SELECT camera, reason FROM clip WHERE state = 'quarantined' ORDER BY quarantined_at DESC"
    ):
        row = rows[camera]
        if len(row.reasons) < REASONS_SHOWN and reason and reason not in row.reasons:
            row.reasons.append(reason)
    return rows


def _ago(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return "never (since start)"
    seconds = max(0, int(now - timestamp))
    return str(timedelta(seconds=seconds)) + " ago"


def page(
    *,
    devices: list[str],
    health: dict[str, object],
    started_at: float,
    last_clip_at: dict[str, float],
    rows: dict[str, CameraRow] | None,
    gaps: dict[tuple[str, str], tuple[int, float]],
    now: float | None = None,
) -> str:
    now = now or time.time()
    e = html.escape
    healthy = bool(health.get("healthy"))
    listed = health.get("problems")
    problems = "".join(f"<li>{e(str(p))}</li>" for p in listed) if isinstance(listed, list) else ""
    free = health.get("free_disk_bytes")
    free_text = f"{int(free) / 1e9:.1f} GB" if isinstance(free, int) else "?"
    body = []
    for device in devices:
        row = (rows or {}).get(device, CameraRow(device))
        open_gaps = sum(
            n for (c, s), (n, _) in gaps.items() if c == device and s in ("detected", "fetching", "retrying")
        )
        unfillable = sum(n for (c, s), (n, _) in gaps.items() if c == device and s == "unfillable")
        filled = sum(n for (c, s), (n, _) in gaps.items() if c == device and s == "filled")
        reasons = "".join(f"<div class='reason'>{e(r)}</div>" for r in row.reasons)
        attention = row.quarantined or unfillable or open_gaps
        body.append(
            f"<tr data-camera='{e(device)}' class='{'warn' if attention else ''}'>"
            f"<td class='name'>{e(device)}</td>"
            f"<td data-field='last'>{e(_ago(last_clip_at.get(device), now))}</td>"
            f"<td data-field='today'>{row.today}</td>"
            f"<td data-field='waiting'>{row.waiting}</td>"
            f"<td data-field='quarantined'>{row.quarantined}{reasons}</td>"
            f"<td data-field='gaps'>{open_gaps} open, {unfillable} unfillable, {filled} filled</td>"
            f"<td data-field='backfill'>{row.backfilled_today}</td></tr>"
        )
    verdict = "OK" if healthy else "NEEDS ATTENTION"
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    ledger_note = "" if rows is not None else "<p class='warn'>The ledger cannot be read: counts are missing.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>axis-relay: {verdict}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; background: #fafafa; }}
h1 {{ font-size: 1.4em; margin: 0 0 .3em; }}
.state {{ display: inline-block; padding: .15em .6em; border-radius: .3em; color: #fff; font-weight: 600; }}
.ok {{ background: #2e7d32; }} .bad {{ background: #c62828; }}
table {{ border-collapse: collapse; width: 100%; margin-top: 1em; background: #fff; }}
th, td {{ text-align: left; padding: .45em .7em; border-bottom: 1px solid #ddd; vertical-align: top; }}
th {{ background: #eee; }} tr.warn td {{ background: #fff4e5; }} p.warn {{ color: #b26a00; }}
.reason {{ font-size: .85em; color: #8a4b00; }} .facts span {{ margin-right: 1.5em; }}
</style></head><body>
<h1>axis-relay <span class="state {"ok" if healthy else "bad"}" id="health">{verdict}</span></h1>
<div class="facts"><span>up {e(str(timedelta(seconds=int(now - started_at))))}</span>
<span>disk free {e(free_text)}</span><span>waiting {e(str(health.get("queued_clips")))} clip(s)</span>
<span>uploaded {e(str(health.get("clips_uploaded")))} since start</span>
<span>last upload {e(str(health.get("last_upload_age_s") or "-"))} s ago</span></div>
<ul id="problems">{problems}</ul>{ledger_note}
<table id="cameras"><thead><tr><th>camera</th><th>last clip</th><th>clips today</th><th>waiting</th>
<th>quarantined</th><th>gaps</th><th>back-filled today</th></tr></thead>
<tbody>{"".join(body)}</tbody></table>
<p style="color:#777;font-size:.85em">Refreshes every {REFRESH_S} s. Read-only. {e(stamp)}</p>
</body></html>"""
