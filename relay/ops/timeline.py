"""A camera's last 24 hours as a strip for the status page: inline SVG, no external
assets, one rectangle per run of minutes in one state, each with its times on hover
(an SVG ``<title>``).

States, from the ledger and the last coverage audit:

- ``device``: in S3 from the device; ``backfill``: in S3, fetched back from the card;
- ``missing``: a gap still open, or footage the audit found gone from S3;
- ``unfillable``: a gap back-fill could not close (footage lost);
- ``unaudited``: delivered, but after the last audit's window: not yet checked in S3;
- ``none``: no footage (normal for a camera that sends on events).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from relay.ledger import GapRecord

MINUTES = 24 * 60
State = Literal["device", "backfill", "missing", "unfillable", "unaudited", "none"]
COLOURS: dict[State, str] = {
    "device": "#2e7d32",
    "backfill": "#1565c0",
    "missing": "#c62828",
    "unfillable": "#6d1b1b",
    "unaudited": "#a5d6a7",
    "none": "#e0e0e0",
}
LABELS: dict[State, str] = {
    "device": "in S3 from the device",
    "backfill": "in S3, back-filled from the card",
    "missing": "missing (a gap still open, or gone from S3)",
    "unfillable": "unfillable: footage lost",
    "unaudited": "delivered, not yet audited in S3",
    "none": "no footage",
}
# A minute this full of footage counts as covered.
COVERED_S = 30.0


@dataclass(frozen=True)
class Run:
    state: State
    first: int  # minutes since the strip's start
    last: int  # inclusive


def minute_states(
    since: datetime,
    minutes: dict[int, tuple[float, float, bool]],
    gaps: Sequence[GapRecord],
    audited_until: datetime | None,
) -> list[State]:
    states: list[State] = []
    for m in range(MINUTES):
        device, backfill, gone = minutes.get(m, (0.0, 0.0, False))
        state: State = "none"
        if device + backfill >= COVERED_S:
            state = "backfill" if backfill > device else "device"
            moment = since + timedelta(minutes=m + 1)
            if audited_until is None or moment > audited_until:
                state = "unaudited"
        if gone:
            state = "missing"
        states.append(state)
    for gap in gaps:
        if gap.state == "filled":
            continue
        first = max(0, int((gap.span.starts - since).total_seconds() // 60))
        last = min(MINUTES - 1, int((gap.span.ends - since).total_seconds() // 60))
        for m in range(first, last + 1):
            states[m] = "unfillable" if gap.state == "unfillable" else "missing"
    return states


def runs(states: Sequence[State]) -> list[Run]:
    found: list[Run] = []
    for m, state in enumerate(states):
        if found and found[-1].state == state:
            found[-1] = Run(state, found[-1].first, m)
        else:
            found.append(Run(state, m, m))
    return found


def strip(camera: str, since: datetime, states: Sequence[State]) -> str:
    """The SVG: 1440 units wide (a minute each), scaled to the page's width."""
    rects = []
    for run in runs(states):
        starts = since + timedelta(minutes=run.first)
        ends = since + timedelta(minutes=run.last + 1)
        label = f"{starts:%H:%M} - {ends:%H:%M} {LABELS[run.state]}"
        rects.append(
            f"<rect x='{run.first}' y='0' width='{run.last - run.first + 1}' height='10' fill='{COLOURS[run.state]}' "
            f"data-state='{run.state}' data-from='{starts.isoformat()}' data-to='{ends.isoformat()}'>"
            f"<title>{html.escape(label)}</title></rect>"
        )
    return (
        f"<svg class='timeline' data-camera='{html.escape(camera)}' viewBox='0 0 {MINUTES} 10' "
        f"preserveAspectRatio='none' width='100%' height='14' role='img' "
        f"aria-label='{html.escape(camera)}: the last 24 hours'>{''.join(rects)}</svg>"
    )


def legend() -> str:
    return "".join(
        f"<span class='key'><i style='background:{COLOURS[s]}'></i>{html.escape(LABELS[s])}</span>" for s in COLOURS
    )
