"""What an object's key says about its footage, read back from the key template.

A key template that holds the footage's start and end as whole time stamps (``{start:FMT}``
and ``{end:FMT}``, each FMT with year, month, day, hour, minute and second) lets coverage
be read from a listing alone: no request per object. The relay's default templates do
(relay.config_destinations). Any other template still works: its objects are asked for
their metadata (relay.upload.metadata), one HEAD each.

The listing prefix for the clips that start on one day is worked out from the template
itself: the part of the key that stays the same for every clip of that camera and day.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from relay.templates import key_fields

# strftime directives a key's time may use, as regular expressions.
_DIRECTIVES = {
    "Y": r"\d{4}",
    "m": r"\d{2}",
    "d": r"\d{2}",
    "H": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "f": r"\d{6}",
    "j": r"\d{3}",
    "y": r"\d{2}",
    "%": "%",
}
_WHOLE = {"Y", "m", "d", "H", "M", "S"}
# A key the relay had to keep apart from another clip's: '<stem>~<clip id><ext>'.
_KEPT_APART = re.compile(r"~[A-Za-z0-9.:_-]{1,64}(?=\.[^./]*$|$)")


def _time_pattern(fmt: str) -> tuple[str, set[str]] | None:
    """A regular expression for what ``fmt`` prints, and the directives it uses; None
    if it uses one this reader does not know (then the key is not read)."""
    pattern, used, at = "", set(), 0
    for found in re.finditer(r"%(.)", fmt):
        if found.group(1) not in _DIRECTIVES:
            return None
        pattern += re.escape(fmt[at : found.start()]) + _DIRECTIVES[found.group(1)]
        used.add(found.group(1))
        at = found.end()
    return pattern + re.escape(fmt[at:]), used


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


@dataclass(frozen=True)
class KeySpan:
    starts: datetime
    ends: datetime


class KeyLayout:
    """One key template, read backwards."""

    def __init__(self, template: str) -> None:
        self.template = template
        self._regex: re.Pattern[str] | None = None
        self._formats: dict[str, str] = {}
        pattern, readable, seen = "", True, set()
        for literal, name, spec, _ in string.Formatter().parse(template):
            pattern += re.escape(literal)
            if name is None:
                continue
            if name in ("start", "end", "date") and spec:
                timed = _time_pattern(spec)
                if timed is None:
                    readable = False
                    continue
                whole = timed[1] >= _WHOLE and bool({"Y", "y"} & timed[1])
                if name != "date" and name not in seen and whole:
                    pattern += f"(?P<{name}>{timed[0]})"
                    self._formats[name] = spec
                    seen.add(name)
                else:
                    pattern += f"(?:{timed[0]})"
                continue
            pattern += r"[^/]*?" if name not in ("filename", "stem") else r".*?"
        if readable and seen == {"start", "end"}:
            self._regex = re.compile(pattern)

    @property
    def spans_in_key(self) -> bool:
        """Does a listing alone tell each object's footage?"""
        return self._regex is not None

    def span(self, key: str) -> KeySpan | None:
        if self._regex is None:
            return None
        found = self._regex.fullmatch(key) or self._regex.fullmatch(_KEPT_APART.sub("", key, count=1))
        if found is None:
            return None
        try:
            starts = datetime.strptime(found.group("start"), self._formats["start"]).replace(tzinfo=UTC)
            ends = datetime.strptime(found.group("end"), self._formats["end"]).replace(tzinfo=UTC)
        except ValueError:
            return None
        return KeySpan(starts, ends) if ends >= starts else None

    def day_prefix(self, camera: str, day: datetime) -> str:
        """The longest prefix every key of ``camera`` starting on ``day`` (UTC) shares,
        whatever else the clip is (file name, id, origin, end, arrival the day before or
        after): what to list for that day."""
        first = day.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        last = first + timedelta(days=1) - timedelta(microseconds=1)
        samples = [
            self.template.format(
                **key_fields(
                    camera=camera,
                    filename=filename,
                    date=date,
                    clip_id=clip_id,
                    origin=origin,
                    start=start,
                    end=end,
                )
            )
            for start, end, date, filename, clip_id, origin in (
                (first, first, first - timedelta(days=1), "0.mkv", "0", "backfill"),
                (last, last + timedelta(days=1), last + timedelta(days=1), "~~.mp4", "~", "device"),
            )
        ]
        return _common_prefix(*samples)

    def start_prefix(self, camera: str, start: datetime) -> str:
        """The longest prefix every key of ``camera`` whose footage starts at ``start``
        shares, whatever its end, file name, arrival, id or origin: where the same clip,
        named otherwise by another relay (its own ``#s``), would be."""
        samples = [
            self.template.format(
                **key_fields(
                    camera=camera, filename=filename, date=date, clip_id=clip_id, origin=origin, start=start, end=end
                )
            )
            for end, date, filename, clip_id, origin in (
                (start, start - timedelta(days=1), "0.mkv", "0", "backfill"),
                (start + timedelta(days=1), start + timedelta(days=1), "~~.mp4", "~", "device"),
            )
        ]
        return _common_prefix(*samples)

    def start_after(self, camera: str, moment: datetime) -> str | None:
        """A StartAfter for listing ``camera``'s day of ``moment`` from ``moment`` on: below
        every key whose footage starts at or after it. None unless keys sort by start
        within a day (the default templates do), when the whole day is listed."""
        if self._regex is None:
            return None
        early, late = moment - timedelta(microseconds=1), moment
        below = self._format(camera, start=early, end=early + timedelta(days=2), filler="\U0010ffff")
        above = self._format(camera, start=late, end=late, filler="")
        return below if below < above else None

    def _format(self, camera: str, *, start: datetime, end: datetime, filler: str) -> str:
        return self.template.format(
            **key_fields(
                camera=camera,
                filename=filler,
                date=start,
                clip_id=filler,
                origin="device" if filler else "backfill",
                start=start,
                end=end,
            )
        )
