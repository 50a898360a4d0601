"""The two kinds of template in the config, checked where the config is read and used
where clips are named: the device's file-name template (read back into the moment a
name was made) and the object key template. A leaf module: the config validates with
it, the spool and the uploads use it, and it imports neither."""

from __future__ import annotations

import posixpath
import re
import string
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

# The device's file-name modifiers (axis-devices.md) as regular expressions.
_FIELDS = {
    "%Y": r"(?P<Y>\d{4})",
    "%y": r"(?P<y>\d{2})",
    "%m": r"(?P<m>\d{2})",
    "%d": r"(?P<d>\d{2})",
    "%H": r"(?P<H>\d{2})",
    "%M": r"(?P<M>\d{2})",
    "%S": r"(?P<S>\d{2})",
    "%f": r"(?P<f>\d{2})",  # hundredths of a second
    "%z": r"(?P<z>[+-]\d{4})",
    "#s": r"\d{5}",
    "#M": r"[0-9A-Fa-f]{12}",
    "#m": r"[0-9A-Fa-f]{12}",
    "#n": r".+?",
    "#i": r"[0-9A-Fa-f.:_]+?",
}
_TOKEN = re.compile("|".join(re.escape(t) for t in _FIELDS))


class FilenameTemplate:
    """The device's file-name template, read back: the moment a name was made."""

    def __init__(self, template: str) -> None:
        pattern, used, at = "", set(), 0
        for found in _TOKEN.finditer(template):
            pattern += re.escape(template[at : found.start()]) + _FIELDS[found.group()]
            if found.group() in used and found.group().startswith("%"):
                raise ValueError(f"{found.group()} appears twice in {template!r}")
            used.add(found.group())
            at = found.end()
        pattern += re.escape(template[at:])
        if not ({"%Y", "%y"} & used and {"%m", "%d", "%H", "%M", "%S"} <= used):
            raise ValueError(
                f"{template!r} does not carry a whole time stamp: it needs %y (or %Y), %m, %d, %H, %M and %S"
            )
        self.template = template
        self._regex = re.compile(pattern)

    def moment(self, filename: str, zone: str) -> datetime | None:
        found = self._regex.fullmatch(filename)
        if not found:
            return None
        g = found.groupdict()
        year = int(g["Y"]) if g.get("Y") else 2000 + int(g["y"])
        if g.get("z"):
            sign = -1 if g["z"][0] == "-" else 1
            offset = timedelta(hours=int(g["z"][1:3]), minutes=int(g["z"][3:5]))
            tz: timezone | ZoneInfo = timezone(sign * offset)
        else:
            tz = ZoneInfo(zone)
        try:
            local = datetime(year, int(g["m"]), int(g["d"]), int(g["H"]), int(g["M"]), int(g["S"]), tzinfo=tz)
        except ValueError:
            return None  # 13th month, 25th hour: not a time stamp after all
        return (local + timedelta(milliseconds=10 * int(g.get("f") or 0))).astimezone(UTC)


def key_fields(
    *, camera: str, filename: str, date: datetime, clip_id: str, origin: str, start: datetime, end: datetime
) -> dict[str, object]:
    """What a key template may name, for one clip: the one place the fields are spelled."""
    stem, ext = posixpath.splitext(filename)
    return {
        "camera": camera,
        "filename": filename,
        "date": date,
        "clip_id": clip_id,
        "stem": stem,
        "ext": ext,
        "origin": origin,
        "start": start,
        "end": end,
    }


_SAMPLE = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SAMPLE_FIELDS = key_fields(
    camera="c", filename="f.mkv", date=_SAMPLE, clip_id="x", origin="device", start=_SAMPLE, end=_SAMPLE
)
KEY_FIELDS = frozenset(SAMPLE_FIELDS)


def check_key_template(template: str) -> str:
    """A key template's fields are known and it formats; raises ValueError saying why not."""
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    if reaching := sorted(n for n in names if "." in n or "[" in n):
        raise ValueError(f"{reaching}: only plain field names, with a format spec after ':', e.g. {{date:%Y}}")
    if unknown := names - KEY_FIELDS:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; use any of {sorted(KEY_FIELDS)}")
    if not names & {"filename", "clip_id", "stem", "start"}:
        raise ValueError(
            "the key must contain {filename}, {stem}, {clip_id} or {start}, or every clip lands on one key"
        )
    try:
        template.format(**SAMPLE_FIELDS)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"cannot be formatted: {exc}") from exc
    return template
