"""find_gaps as a pure function, for the cases a soak found: the edges the relay chose
(a back-filled piece, the watch start) get no jitter threshold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relay.backfill.gaps import ClipSpan, Expectation, Span, find_gaps

T0 = datetime(2026, 12, 1, 21, 0, 0, tzinfo=UTC)
EXPECT = Expectation(continuous=True, cadence_s=2.0, grace_s=600.0, threshold_s=2.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def clip(start: float, end: float, origin: str = "device", sequence: int | None = None) -> ClipSpan:
    return ClipSpan(at(start), at(end), sequence, origin, "uploaded")


def test_a_short_hole_between_two_device_clips_is_jitter() -> None:
    clips = [clip(0, 10), clip(11.5, 20)]
    assert find_gaps(clips, [], EXPECT, at(30), since=at(-100)) == []


def test_a_short_hole_after_a_backfilled_piece_is_missing_footage() -> None:
    # A silence gap [0.9, 2.95] was found and filled with [0, 3.5]; the camera's next
    # clip starts at 5.0: the 1.5 s between are footage nobody has.
    clips = [clip(0, 3.5, origin="backfill"), clip(5, 7)]
    found = find_gaps(clips, [Span(at(0.9), at(2.95))], EXPECT, at(30), since=at(-100), watched_since=at(0.9))
    assert [(g.starts, g.ends, g.cause) for g in found] == [(at(3.5), at(5), "coverage")]


def test_time_before_the_first_clip_counts_from_the_watch_start() -> None:
    found = find_gaps([clip(4, 6)], [], EXPECT, at(30), since=at(-100), watched_since=at(1))
    assert [(g.starts, g.ends) for g in found] == [(at(1), at(4))]


def test_known_gaps_and_clips_are_never_reported_twice() -> None:
    clips = [clip(0, 2, sequence=1), clip(6, 8, sequence=3)]
    first = find_gaps(clips, [], EXPECT, at(30), since=at(-100))
    assert [(g.starts, g.ends, g.cause) for g in first] == [(at(2), at(6), "sequence")]
    again = find_gaps(clips, [Span(g.starts, g.ends) for g in first], EXPECT, at(30), since=at(-100))
    assert again == []
