"""Coverage of one camera over a window: what S3 holds (relay.coverage.bucket), what the
ledger says was delivered, and where the two disagree.

Pure: the readings come in, the verdict goes out. Spans are merged by sorting (a
camera-day is thousands of clips).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from relay.backfill.gaps import Span
from relay.coverage.bucket import ObjectFootage
from relay.ledger import ClipRecord, GapRecord

Source = Literal["s3", "ledger", "both"]


def merge(spans: Iterable[Span]) -> list[Span]:
    """The union of ``spans``, as sorted, disjoint spans."""
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: s.starts):
        if merged and span.starts <= merged[-1].ends:
            if span.ends > merged[-1].ends:
                merged[-1] = Span(merged[-1].starts, span.ends)
        else:
            merged.append(span)
    return merged


def clip(spans: Iterable[Span], window: Span) -> list[Span]:
    return [
        Span(max(s.starts, window.starts), min(s.ends, window.ends))
        for s in spans
        if s.ends > window.starts and s.starts < window.ends
    ]


def seconds(spans: Iterable[Span]) -> float:
    return sum(s.seconds for s in spans)


def complement(merged: Sequence[Span], window: Span) -> list[Span]:
    """What of ``window`` the merged spans leave open."""
    holes, at = [], window.starts
    for span in merged:
        if span.starts > at:
            holes.append(Span(at, span.starts))
        at = max(at, span.ends)
    if at < window.ends:
        holes.append(Span(at, window.ends))
    return holes


@dataclass(frozen=True)
class Hole:
    span: Span
    reason: str  # what the ledger knows of it (a gap's state and reason), or ""


@dataclass(frozen=True)
class Disagreement:
    kind: Literal["missing_in_s3", "not_in_ledger"]
    key: str
    span: Span | None
    detail: str


@dataclass
class CameraCoverage:
    camera: str
    source: Source
    window: Span
    continuous: bool  # holes in time count only for a camera that records all the time
    device_s: float = 0.0
    backfill_s: float = 0.0
    holes: list[Hole] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # objects whose footage nothing tells
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def covered_s(self) -> float:
        return self.device_s + self.backfill_s

    @property
    def ratio(self) -> float:
        """The share of the window in S3 (a camera that records all the time); for one
        that sends on events, the share not lost to a hole the ledger knows (its quiet
        hours are no loss)."""
        if self.window.seconds <= 0:
            return 1.0
        if not self.continuous:
            return max(0.0, 1.0 - sum(h.span.seconds for h in self.holes) / self.window.seconds)
        return min(1.0, self.covered_s / self.window.seconds)

    @property
    def complete(self) -> bool:
        return not self.holes and not self.disagreements and not self.unreadable


def _gap_said(gap: GapRecord) -> str:
    """What a hole's reason says of the gap the ledger has for it."""
    return f"gap {gap.gap_id} {gap.state}: {gap.reason or gap.found}"


def _hole_reason(hole: Span, gaps: Sequence[GapRecord]) -> str:
    for gap in gaps:
        if gap.span.starts < hole.ends and gap.span.ends > hole.starts:
            return _gap_said(gap)
    return ""


def judge(
    camera: str,
    window: Span,
    *,
    source: Source,
    continuous: bool,
    min_hole_s: float,
    objects: Sequence[ObjectFootage] | None,
    ledger_clips: Sequence[ClipRecord] | None,
    ledger_gaps: Sequence[GapRecord] = (),
    keys_outside_listing: dict[str, bool] | None = None,
    requests: dict[str, int] | None = None,
) -> CameraCoverage:
    """The verdict for one camera. ``objects`` from S3 (None with source "ledger"),
    ``ledger_clips`` the ledger's rows overlapping the window (None: no ledger).
    ``keys_outside_listing``: ledger keys the listing could not have seen, and whether a
    HEAD found each."""
    report = CameraCoverage(camera, source, window, continuous, requests=dict(requests or {}))
    if source == "ledger":
        delivered = [r for r in ledger_clips or () if r.state == "uploaded"]
        footage: list[tuple[Span, str]] = [(s, r.origin) for r in delivered if (s := r.span) is not None]
    else:
        # An object whose key and metadata are silent (written before objects said their
        # footage, or by the seed's function) counts where the ledger knows its span.
        known = {r.key: (r.span, r.origin) for r in ledger_clips or () if r.key and r.span is not None}
        footage = []
        for o in objects or ():
            if o.span is not None:
                footage.append((o.span, o.origin))
            elif (from_ledger := known.get(o.key)) is not None:
                footage.append(from_ledger)
            else:
                report.unreadable.append(o.key)
    device = merge(clip((s for s, origin in footage if origin != "backfill"), window))
    everything = merge(clip((s for s, _ in footage), window))
    report.device_s = seconds(device)
    report.backfill_s = seconds(everything) - report.device_s
    if continuous:
        open_time = [h for h in complement(everything, window) if h.seconds >= min_hole_s]
        report.holes = [Hole(h, _hole_reason(h, ledger_gaps)) for h in open_time]
    else:
        # Holes between clips are a quiet camera's normal: only what the ledger found missing.
        report.holes = [
            Hole(
                Span(max(g.span.starts, window.starts), min(g.span.ends, window.ends)),
                _gap_said(g),
            )
            for g in ledger_gaps
            if g.state != "filled" and g.span.starts < window.ends and g.span.ends > window.starts
        ]
    if source == "both" and objects is not None and ledger_clips is not None:
        report.disagreements = _disagreements(objects, ledger_clips, keys_outside_listing or {})
    return report


def _disagreements(
    objects: Sequence[ObjectFootage], rows: Sequence[ClipRecord], outside: dict[str, bool]
) -> list[Disagreement]:
    in_s3 = {o.key for o in objects}
    known = {r.key for r in rows if r.key}
    found = []
    for row in rows:
        if row.state != "uploaded" or not row.key or row.key in in_s3 or outside.get(row.key):
            continue
        found.append(
            Disagreement(
                "missing_in_s3",
                row.key,
                row.span,
                f"the ledger says clip {row.clip_id} was delivered at {row.uploaded_at}, but S3 does not hold it "
                "(deleted? a lifecycle rule?)",
            )
        )
    for obj in objects:
        if obj.key not in known:
            found.append(
                Disagreement(
                    "not_in_ledger",
                    obj.key,
                    obj.span,
                    "S3 holds footage this relay's ledger never saw (a peer relay, a replaced gateway, "
                    "or an object written by hand)",
                )
            )
    return found
