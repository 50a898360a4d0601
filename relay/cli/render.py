"""What the commands print, from the data the packages return: tables and sentences
for a person, JSON for a script (`spool list`, `clips`, `gaps`, `status`, `gen-cert`)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from relay.ledger import ClipRecord, GapRecord
from relay.ops.units import human_bytes
from relay.spool.store import StoredClip

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``90m``, ``2h``, ``7d`` (that long ago) or an ISO 8601 time; a time without an
    offset is the gateway's local time. ValueError names the accepted forms."""
    now = now or datetime.now(UTC)
    if found := _RELATIVE.match(text.strip()):
        return now - timedelta(**{_UNITS[found.group(2)]: float(found.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (30m, 2h, 7d) or a time (2026-11-28T08:00, 2026-11-28T08:00Z)"
        ) from None
    return moment.astimezone(UTC)  # a naive time is taken as local time


def spool_table(entries: Iterable[StoredClip]) -> str:
    lines = [f"{'STATE':<12} {'CLIP':<34} {'DEVICE':<16} {'BYTES':>12}  FILE / REASON"]
    for entry in entries:
        meta = entry.meta
        camera, size, filename = (meta.camera, meta.size, meta.filename) if meta else ("?", "?", "?")
        line = f"{entry.state:<12} {entry.clip_id:<34} {camera:<16} {size:>12}  {filename}"
        if entry.state == "quarantined":
            line += "  -- " + str(entry.reason.get("reason", ""))
            if fix := entry.reason.get("fix"):
                line += f"\n{'':<12} fix: {fix}"
        lines.append(line)
    return "\n".join(lines)


def clips_table(records: list[ClipRecord]) -> str:
    lines = [f"{'RECEIVED (UTC)':<23} {'CAMERA':<16} {'SEQ':>6} {'BYTES':>11} {'STATE':<11} FILE -> KEY / REASON"]
    for r in records:
        where = (r.key or "") if r.state == "uploaded" else (r.reason or "")
        sequence = "-" if r.sequence is None else str(r.sequence)
        origin = "" if r.origin == "device" else f" ({r.origin})"
        lines.append(
            f"{r.received_at[:23]:<23} {r.camera:<16} {sequence:>6} {r.bytes:>11} {r.state:<11} "
            f"{r.filename}{origin}" + (f" -> {where}" if where else "")
        )
    lines.append(f"{len(records)} clip(s)")
    return "\n".join(lines)


def clips_json(records: list[ClipRecord]) -> str:
    return json.dumps([dataclasses.asdict(r) for r in records], indent=1)


def _iso(ledger_text: str | None) -> str | None:
    """A ledger time (microseconds, Z) as ISO 8601 UTC to the millisecond."""
    return None if ledger_text is None else ledger_text[:23] + "Z"


def gaps_table(records: list[GapRecord]) -> str:
    lines = [f"{'START (UTC)':<23} {'END (UTC)':<23} {'CAMERA':<16} {'SECONDS':>8} {'CAUSE':<9} {'STATE':<11} REASON"]
    for g in records:
        lines.append(
            f"{g.starts_at[:23]:<23} {g.ends_at[:23]:<23} {g.camera:<16} {g.seconds:>8.1f} {g.cause:<9} "
            f"{g.state:<11} {g.reason or g.found}"
        )
    by_state: dict[str, int] = {}
    for g in records:
        by_state[g.state] = by_state.get(g.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
    lines.append(f"{len(records)} gap(s)" + (f": {summary}" if summary else ""))
    return "\n".join(lines)


def gaps_json(records: list[GapRecord]) -> str:
    return json.dumps(
        [
            {
                "id": g.gap_id,
                "camera": g.camera,
                "start": _iso(g.starts_at),
                "end": _iso(g.ends_at),
                "seconds": round(g.seconds, 3),
                "cause": g.cause,
                "state": g.state,
                "reason": g.reason or g.found,
                "found": g.found,
                "detected_at": _iso(g.detected_at),
                "updated_at": _iso(g.updated_at),
                "attempts": g.attempts,
                "fetched_until": _iso(g.fetched_until),
                "fetched_bytes": g.fetched_bytes,
                "missing_s": g.missing_s,
            }
            for g in records
        ],
        indent=1,
    )


def discarding(clip: StoredClip) -> str:
    camera = clip.meta.camera if clip.meta else "?"
    size = human_bytes(clip.meta.size) if clip.meta else "?"
    return f"discarding {clip.clip_id}  {camera}  {size}  ({clip.reason.get('reason', 'no reason recorded')})"


def health(report: dict[str, object]) -> str:
    """`axis-relay status`: the level, each reason with its fix, then the figures (sizes for people)."""
    level = str(report.get("status", "failing"))
    lines = [f"{'health':<24} {level.upper()}"]
    reasons = report.get("reasons", [])
    for reason in reasons if isinstance(reasons, list) else []:
        where = f" [{reason['camera']}]" if reason.get("camera") else ""
        lines.append(f"  {reason['level']:<9} {reason['code']}{where}: {reason['message']}")
        lines.append(f"  {'':<9} fix: {reason['fix']}")
    for key, value in report.items():
        if key == "pair" and isinstance(value, dict):
            lines += pair(value)
        elif key not in ("status", "reasons", "healthy", "problems"):
            shown = human_bytes(value) if key.endswith("_bytes") else value
            lines.append(f"{key.replace('_', ' '):<24} {'-' if value is None else shown}")
    return "\n".join(lines)


def pair(report: dict[str, Any]) -> list[str]:
    """The pair's lines of `axis-relay status`: the peer, then each camera's roles."""
    peer = report["peer"]
    reach = {True: "reachable", False: f"UNREACHABLE ({peer['unreachable_because']})", None: "not tried yet"}
    age = peer["heartbeat_age_s"]
    problem = peer["heartbeat_problem"] or "not read yet"
    heard = f"heartbeat {age:.0f} s ago" if age is not None else f"no heartbeat seen ({problem})"
    lines = [
        f"{'this relay':<24} {report['relay_id']}",
        f"{'peer':<24} {peer['relay_id'] or '?'} at {peer['url']}: {reach[peer['reachable']]}, {heard}, "
        f"{peer['queued_clips']} clip(s) queued",
    ]
    for camera, roles in report["cameras"].items():
        stored = roles["peer_last_stored_age_s"]
        lines.append(
            f"  {camera:<22} primary {roles['primary']}, lease {roles['lease_holder'] or 'unknown'}, peer stored "
            f"{'never' if stored is None else f'{stored:.0f} s ago'}, {roles['delivered_by_peer']} delivered by peer"
        )
    return lines


def certificate(paths: dict[str, Path], names: list[str], ca_fingerprint: str, *, ca_was_there: bool) -> str:
    """What `gen-cert` made, and what to do with it."""
    if ca_was_there:
        about_ca = (
            f"Signed by the CA already in {paths['ca_cert'].parent} (SHA-256 {ca_fingerprint}): devices that "
            "trust it need nothing new."
        )
    else:
        about_ca = f"A NEW CA (SHA-256 {ca_fingerprint}): every device that validates the relay needs its ca.crt."
    return f"""Wrote {paths["cert"]} and {paths["key"]} for: {", ".join(names)}
{about_ca}
In the relay's config:
    [ingest]
    tls_cert = "{paths["cert"]}"
    tls_key = "{paths["key"]}"
On each device, either install the CA {paths["ca_cert"]}
(web page: System > Security > CA certificates > Add; or VAPIX certificate management)
and keep "Validate server certificate" on in the HTTPS recipient, or turn
"Validate server certificate" off. Keep {paths["ca_key"]} (mode 0600): renewing the
certificate with the same CA needs it. After replacing the files, 'systemctl reload
axis-relay' (SIGHUP) loads them without dropping uploads in progress.
"""
