"""``GET /`` on the metrics listener: one self-contained HTML page a technician on site
reads without Grafana, refreshing itself: the relay's health level and its reasons
(relay.ops.health, the same as /healthz), version, destination, uptime and disk; per
camera its last clip, clips today, clips waiting, quarantined (with the reasons), gaps
and back-fill (where back-fill is on), failed TLS handshakes and its clock; on a site with
two gateways, the peer (reachable? its heartbeat) and each camera's roles.
Read-only; no external assets; every value escaped."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from datetime import datetime

from relay.ledger import CameraDay
from relay.ops import timeline
from relay.ops.health import Health, human_duration
from relay.ops.stats import CameraStatus, RelayStats

REFRESH_S = 10


def ago(timestamp: float | None, now: float) -> str:
    return "never since start" if timestamp is None else human_duration(now - timestamp) + " ago"


BADGE = {"ok": ("OK", "#2e7d32"), "degraded": ("DEGRADED", "#b26a00"), "failing": ("FAILING", "#c62828")}


@dataclass(frozen=True)
class PageFacts:
    version: str
    destination: str
    devices: list[str]
    health: Health
    facts: dict[str, object]  # /healthz's report
    stats: RelayStats
    rows: dict[str, CameraDay] | None  # None: the ledger could not be read
    backfill: bool
    # Each camera's last 24 h as an SVG strip (relay.ops.timeline); None: not read.
    strips: dict[str, str] | None = None


def _clock(status: CameraStatus | None) -> str:
    if status is None or not status.access:
        return "-"
    if status.clock_synced is False:
        return "not synced"
    if status.clock_offset_s is None:
        return "not read yet"
    return f"{status.clock_offset_s:+.1f} s"


def _camera_row(device: str, p: PageFacts, now: float) -> str:
    e = html.escape
    row = (p.rows or {}).get(device, CameraDay(device))
    gaps = p.stats.gap_totals
    open_gaps = sum(n for (c, s), (n, _) in gaps.items() if c == device and s in ("detected", "fetching", "retrying"))
    unfillable = sum(n for (c, s), (n, _) in gaps.items() if c == device and s == "unfillable")
    filled = sum(n for (c, s), (n, _) in gaps.items() if c == device and s == "filled")
    tls = sum(n for (_, d), n in p.stats.tls_handshake_failures.items() if d == device)
    reasons = "".join(f"<div class='reason'>{e(r)}</div>" for r in row.reasons)
    flagged = {r.camera for r in p.health.reasons if r.camera}
    attention = row.quarantined or unfillable or open_gaps or device in flagged
    cells = [
        f"<td class='name'>{e(device)}</td>",
        f"<td data-field='last'>{e(ago(p.stats.last_clip_at.get(device), now))}</td>",
        f"<td data-field='today'>{row.today}</td>",
        f"<td data-field='waiting'>{row.waiting}</td>",
        f"<td data-field='quarantined'>{row.quarantined}{reasons}</td>",
    ]
    if p.backfill:
        cells += [
            f"<td data-field='gaps'>{open_gaps} open, {unfillable} unfillable, {filled} filled</td>",
            f"<td data-field='backfill'>{row.backfilled_today}</td>",
        ]
    cells += [
        f"<td data-field='tls'>{tls}</td>",
        f"<td data-field='clock'>{e(_clock(p.stats.cameras.get(device)))}</td>",
    ]
    row_html = f"<tr data-camera='{e(device)}' class='{'warn' if attention else ''}'>{''.join(cells)}</tr>"
    if p.strips is not None and device in p.strips:
        row_html += f"<tr class='strip'><td colspan='{len(cells)}'>{p.strips[device]}</td></tr>"
    return row_html


def _pair(report: object) -> str:
    """The pair's section, from /healthz's ``pair`` (relay.ops.pair_view.report)."""
    if not isinstance(report, dict):
        return ""
    e = html.escape
    peer = report["peer"]
    reach = {True: "reachable", False: f"UNREACHABLE: {peer['unreachable_because']}", None: "not tried yet"}
    age = peer["heartbeat_age_s"]
    problem = peer["heartbeat_problem"] or "not read yet"
    heard = f"heartbeat {human_duration(age)} ago" if age is not None else f"no heartbeat: {problem}"
    rows = "".join(
        f"<tr data-camera='{e(camera)}'><td class='name'>{e(camera)}</td><td data-field='primary'>"
        f"{e(str(roles['primary']))}</td><td data-field='lease'>{e(roles['lease_holder'] or 'unknown')}</td>"
        f"<td data-field='peer-stored'>"
        f"{'never' if roles['peer_last_stored_age_s'] is None else e(human_duration(roles['peer_last_stored_age_s']))}"
        f"{'' if roles['peer_last_stored_age_s'] is None else ' ago'}</td>"
        f"<td data-field='by-peer'>{roles['delivered_by_peer']}</td></tr>"
        for camera, roles in report["cameras"].items()
    )
    warn = "warn" if peer["reachable"] is False or age is None else ""
    return (
        f"<h2>Two gateways</h2><p id='peer' class='{warn}' data-reachable='{str(peer['reachable']).lower()}'>"
        f"This relay: <b>{e(report['relay_id'])}</b>. Peer <b>{e(peer['relay_id'] or '?')}</b> at "
        f"{e(peer['url'])}: {e(reach[peer['reachable']])}, {e(heard)}, {peer['queued_clips']} clip(s) queued.</p>"
        "<table id='pair'><thead><tr><th>camera</th><th>uploads first</th><th>back-fill lease</th>"
        f"<th>peer last stored</th><th>delivered by peer</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def page(p: PageFacts, now: float | None = None) -> str:
    now = now or time.time()
    e = html.escape
    word, colour = BADGE[p.health.status]
    reasons = "".join(
        f"<li data-code='{e(r.code)}' class='{e(r.level)}'><b>{e(r.message)}</b><div class='fix'>Fix: {e(r.fix)}</div>"
        "</li>"
        for r in p.health.reasons
    )
    free = p.facts.get("free_disk_bytes")
    free_text = f"{int(free) / 1e9:.1f} GB" if isinstance(free, int) else "?"
    head = "<th>camera</th><th>last clip</th><th>clips today</th><th>waiting</th><th>quarantined</th>"
    if p.backfill:
        head += "<th>gaps</th><th>back-filled today</th>"
    head += "<th>TLS failures</th><th>clock</th>"
    body = "".join(_camera_row(device, p, now) for device in p.devices)
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    ledger_note = "" if p.rows is not None else "<p class='warn'>The ledger cannot be read: counts are missing.</p>"
    legend = f"<div id='legend'>Each camera's last 24 h, hover for the times: {timeline.legend()}</div>"
    legend = legend if p.strips else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_S}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>axis-relay: {word}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; background: #fafafa; }}
h1 {{ font-size: 1.4em; margin: 0 0 .3em; }} h1 small {{ font-weight: normal; color: #777; font-size: .6em; }}
.state {{ display: inline-block; padding: .15em .6em; border-radius: .3em; color: #fff; font-weight: 600; }}
table {{ border-collapse: collapse; width: 100%; margin-top: 1em; background: #fff; }}
th, td {{ text-align: left; padding: .45em .7em; border-bottom: 1px solid #ddd; vertical-align: top; }}
th {{ background: #eee; }} tr.warn td {{ background: #fff4e5; }} p.warn {{ color: #b26a00; }}
.reason {{ font-size: .85em; color: #8a4b00; }} .facts span {{ margin-right: 1.5em; }}
#reasons li {{ margin: .4em 0; }} h2 {{ font-size: 1.1em; margin: 1.2em 0 0; }}
#reasons li.failing b {{ color: #c62828; }}
#reasons li.degraded b {{ color: #8a4b00; }}
.fix {{ font-size: .9em; color: #444; }}
tr.strip td {{ padding: 0 .7em .5em; border-bottom: 1px solid #ddd; }} svg.timeline {{ display: block; }}
#legend {{ font-size: .8em; color: #555; margin-top: .5em; }} .key {{ white-space: nowrap; }}
#legend i {{ display: inline-block; width: .9em;
height: .9em; margin: 0 .3em 0 1em; vertical-align: -.1em; }}
</style></head><body>
<h1>axis-relay <span class="state" id="health" data-status="{p.health.status}" style="background:{colour}">{word}</span>
<small id="version">{e(p.version)}</small></h1>
<div class="facts"><span>to <b id="destination">{e(p.destination)}</b></span>
<span id="uptime">up {e(human_duration(now - p.stats.started_at))}</span>
<span>disk free {e(free_text)}</span><span>waiting {e(str(p.facts.get("queued_clips")))} clip(s)</span>
<span>uploaded {e(str(p.facts.get("clips_uploaded")))} since start</span>
<span id="last-upload">last upload {e(ago(p.stats.last_upload_at, now))}</span>
<span><a href="/healthz">/healthz</a> <a href="/metrics">/metrics</a></span></div>
<ul id="reasons">{reasons}</ul>{ledger_note}
<table id="cameras"><thead><tr>{head}</tr></thead>
<tbody>{body}</tbody></table>
{legend}
{_pair(p.facts.get("pair"))}
<p style="color:#777;font-size:.85em">Refreshes every {REFRESH_S} s. Read-only. {e(stamp)}</p>
</body></html>"""
