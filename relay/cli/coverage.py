"""``axis-relay coverage``: is every second of each camera in S3? Read from the bucket
itself (``--source s3``, the default), from the ledger (what the relay believes it
delivered), or both, with every disagreement between them. Exit 0 only when coverage is
complete."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from relay.backfill.gaps import Span
from relay.cli import render
from relay.cli.errors import CliError, load
from relay.config import RelayConfig
from relay.coverage.report import CameraCoverage
from relay.coverage.survey import CoverageUnavailable, survey
from relay.spool.clip import footage_time

# S3 Standard request prices (US East, per 1000 requests): LIST as a PUT-class request,
# HEAD as a GET-class one.
PRICE_PER_1000 = {"list": 0.005, "head": 0.0004}


def window(args: argparse.Namespace, now: datetime | None = None) -> Span:
    now = now or datetime.now(UTC)
    if args.day and (args.start or args.end):
        raise CliError("give --day, or --from and --to, not both")
    if args.day:
        try:
            day = datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            raise CliError(f"--day {args.day!r}: give a UTC day as YYYY-MM-DD") from None
        if day >= now:
            raise CliError(f"--day {args.day}: that day has not begun yet (UTC)")
        return Span(day, min(now, day + timedelta(days=1)))
    try:
        start = render.parse_since(args.start or "24h", now)
        end = render.parse_since(args.end, now) if args.end else now
    except ValueError as exc:
        raise CliError(str(exc).replace("--since", "--from/--to")) from None
    if end <= start:
        raise CliError(f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})")
    return Span(start, end)


def coverage(args: argparse.Namespace) -> int:
    config = load(args.config)
    cameras = [args.camera] if args.camera else sorted(config.devices)
    if args.camera and args.camera not in config.devices:
        known = ", ".join(sorted(config.devices)) or "none"
        raise CliError(f"--camera {args.camera!r}: no such device in [devices] (known: {known})")
    span = window(args)
    try:
        reports = asyncio.run(survey(config, cameras, span, args.source))
    except CoverageUnavailable as exc:
        raise CliError(str(exc), 1) from None
    except (ClientError, BotoCoreError, OSError) as exc:
        raise CliError(f"cannot read the bucket: {exc} (check with: axis-relay s3 check)", 1) from None
    print(as_json(reports) if args.json else as_text(config, reports))
    return 0 if all(r.complete for r in reports) else 1


def cost(requests: dict[str, int]) -> float:
    return sum(PRICE_PER_1000.get(kind, 0.0) * n / 1000 for kind, n in requests.items())


def as_json(reports: list[CameraCoverage]) -> str:
    return json.dumps(
        [
            {
                "camera": r.camera,
                "source": r.source,
                "from": footage_time(r.window.starts),
                "to": footage_time(r.window.ends),
                "camera_s": round(r.window.seconds, 3),
                "device_s": round(r.device_s, 3),
                "backfill_s": round(r.backfill_s, 3),
                "ratio": round(r.ratio, 6),
                "complete": r.complete,
                "holes": [
                    {
                        "from": footage_time(h.span.starts),
                        "to": footage_time(h.span.ends),
                        "seconds": round(h.span.seconds, 3),
                        "reason": h.reason,
                    }
                    for h in r.holes
                ],
                "disagreements": [
                    {
                        "kind": d.kind,
                        "key": d.key,
                        "from": footage_time(d.span.starts) if d.span else None,
                        "to": footage_time(d.span.ends) if d.span else None,
                        "detail": d.detail,
                    }
                    for d in r.disagreements
                ],
                "unreadable": r.unreadable,
                "requests": r.requests,
                "cost_usd": round(cost(r.requests), 8),
            }
            for r in reports
        ],
        indent=1,
    )


def as_text(config: RelayConfig, reports: list[CameraCoverage]) -> str:
    lines = []
    for r in reports:
        state = "complete" if r.complete else "INCOMPLETE"
        starts, ends = footage_time(r.window.starts), footage_time(r.window.ends)
        lines.append(
            f"{r.camera}: {state}, {r.ratio:.4%} of {r.window.seconds:.0f} s from {starts} to {ends} ({r.source}): "
            f"{r.device_s:.1f} s from the device, {r.backfill_s:.1f} s back-filled"
        )
        for hole in r.holes:
            why = hole.reason or "nothing in the ledger explains it"
            starts, ends = footage_time(hole.span.starts), footage_time(hole.span.ends)
            lines.append(f"  hole {starts} - {ends} ({hole.span.seconds:.1f} s): {why}")
        for d in r.disagreements:
            lines.append(f"  {d.kind.replace('_', ' ')}: {d.key}: {d.detail}")
        for key in r.unreadable:
            lines.append(f"  unreadable: {key}: neither its key nor its metadata says which footage it holds")
        if r.requests:
            lines.append(
                f"  read with {r.requests.get('list', 0)} LIST and {r.requests.get('head', 0)} HEAD request(s), "
                f"about ${cost(r.requests):.6f} at S3 Standard prices"
            )
    if not config.devices:
        lines.append("no devices in [devices]")
    return "\n".join(lines)
