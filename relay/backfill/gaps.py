"""Where a camera's footage is missing, worked out from the clips the ledger holds.

Pure functions over spans of time; ``relay.backfill.gapbook`` reads and writes them.

- ``continuous`` cameras (clips on a schedule): a hole in time coverage longer than
  the threshold between two clips is a gap (cause ``coverage``); so is no clip at all
  for longer than the cadence plus a grace period (``silence``), which also covers the
  time the relay itself was down, and a camera that went quiet.
- every camera: sequence numbers (``#s``) skipped between two clips (``sequence``); a
  number that goes back (a new configuration, a wrap) is no gap.
- every camera: a clip the relay accepted but had to evict unsent (``evicted``).

Everything already known is taken away first: clips (device or back-fill) and gaps
found before, in any state, so the same range is never reported, or fetched, twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

GapCause = Literal["coverage", "silence", "sequence", "evicted", "manual"]
# Clip states whose footage is (or will be) in S3, or on the gateway for an operator.
COVERING = frozenset({"queued", "uploaded", "quarantined", "unknown"})
# Shorter than this, a hole is not worth an export (the device moves an export's start
# back to a key frame anyway): a few frames.
SLIVER = timedelta(seconds=0.25)
# A jump in #s this large is a reset or a foreign clip, not thousands of lost clips.
MAX_SEQUENCE_SKIP = 1000


@dataclass(frozen=True)
class Span:
    starts: datetime
    ends: datetime

    @property
    def seconds(self) -> float:
        return (self.ends - self.starts).total_seconds()


@dataclass(frozen=True)
class ClipSpan:
    starts: datetime
    ends: datetime
    sequence: int | None
    origin: str
    state: str


@dataclass(frozen=True)
class FoundGap:
    starts: datetime
    ends: datetime
    cause: GapCause
    reason: str


@dataclass(frozen=True)
class Expectation:
    continuous: bool
    cadence_s: float
    grace_s: float
    threshold_s: float


def subtract(span: Span, taken: Iterable[Span]) -> list[Span]:
    """What of ``span`` none of ``taken`` covers, in order."""
    left = [span]
    for cut in sorted(taken, key=lambda s: s.starts):
        rest = []
        for piece in left:
            if cut.ends <= piece.starts or cut.starts >= piece.ends:
                rest.append(piece)
                continue
            if cut.starts > piece.starts:
                rest.append(Span(piece.starts, cut.starts))
            if cut.ends < piece.ends:
                rest.append(Span(cut.ends, piece.ends))
        left = rest
    return left


def missing_seconds(span: Span, by: Iterable[Span]) -> float:
    """Seconds of ``span`` that none of ``by`` covers."""
    return sum(p.seconds for p in subtract(span, by))


def covered_seconds(span: Span, by: Iterable[Span]) -> float:
    return span.seconds - missing_seconds(span, by)


def find_gaps(
    clips: Sequence[ClipSpan],
    known: Sequence[Span],
    expect: Expectation,
    now: datetime,
    *,
    since: datetime,
    watched_since: datetime | None = None,
) -> list[FoundGap]:
    """The new gaps in one camera's clips since ``since`` (clips sorted by start), on the
    camera's clock; a continuous camera's time counts from ``watched_since`` on."""
    candidates: list[FoundGap] = []
    ordered = sorted(clips, key=lambda c: (c.starts, c.ends))
    covering = [c for c in ordered if c.state in COVERING]

    numbered = [(c, c.sequence) for c in ordered if c.origin == "device" and c.sequence is not None]
    for (before, first), (after, then) in itertools.pairwise(numbered):
        skipped = then - first - 1
        if 0 < skipped < MAX_SEQUENCE_SKIP and after.starts > before.ends:
            numbers = f"{first + 1:05d}" + (f"-{then - 1:05d}" if skipped > 1 else "")
            candidates.append(
                FoundGap(before.ends, after.starts, "sequence", f"clip {numbers} never arrived (#s skipped)")
            )

    for clip in ordered:
        if clip.state == "evicted":
            candidates.append(
                FoundGap(clip.starts, clip.ends, "evicted", "accepted, then evicted unsent to make room in the spool")
            )

    if expect.continuous:
        # From the first clip, or from when the relay began to watch: a camera whose
        # first clips were lost, or that never sent one, has a gap too.
        anchor = max(watched_since, since) if watched_since else None
        if covering and (anchor is None or covering[0].starts <= anchor):
            covered_until: datetime | None = covering[0].ends
            by_device = covering[0].origin == "device"
        else:
            covered_until, by_device = anchor, False
        threshold = timedelta(seconds=expect.threshold_s)
        for clip in covering:
            assert covered_until is not None
            # The threshold is for the jitter between two of the camera's own clips; next
            # to a back-filled piece or the watch start (edges the relay chose) any hole
            # is footage missing.
            limit = threshold if by_device and clip.origin == "device" else SLIVER
            if clip.starts - covered_until > limit:
                candidates.append(
                    FoundGap(covered_until, clip.starts, "coverage", "no clip covers this time (a clip was dropped)")
                )
            if clip.ends > covered_until:
                covered_until, by_device = clip.ends, clip.origin == "device"
        silent_for = (now - covered_until).total_seconds() if covered_until else 0.0
        if covered_until is not None and silent_for > expect.cadence_s + expect.grace_s:
            # Footage that ended over grace_s ago should have arrived by now.
            candidates.append(
                FoundGap(
                    covered_until,
                    now - timedelta(seconds=expect.grace_s),
                    "silence",
                    f"no clip for {silent_for:.0f} s (cadence {expect.cadence_s:g} s)",
                )
            )

    taken: list[Span] = [Span(c.starts, c.ends) for c in covering] + list(known)
    found: list[FoundGap] = []
    minimum = SLIVER
    for candidate in sorted(candidates, key=_precedence):
        for piece in subtract(Span(candidate.starts, candidate.ends), taken):
            # Any clip known missing counts, however short; a hole in time only past the minimum.
            wanted = piece.ends - piece.starts >= minimum or candidate.cause in ("sequence", "evicted")
            if wanted and piece.ends > piece.starts:
                found.append(FoundGap(piece.starts, piece.ends, candidate.cause, candidate.reason))
                taken.append(piece)
    return sorted(found, key=lambda g: g.starts)


def _precedence(gap: FoundGap) -> tuple[int, datetime]:
    # The most telling cause names a range found by several rules.
    return ({"evicted": 0, "sequence": 1, "coverage": 2, "silence": 3, "manual": 4}[gap.cause], gap.starts)
