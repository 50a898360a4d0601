"""structlog set-up: journald's native protocol under systemd (relay.ops.journal),
readable lines on a terminal, JSON lines otherwise (or when asked, for log shippers).

Secrets never reach the log: every line, the relay's own and the libraries', passes
one redaction step (tokens and passwords in query strings, plain or URL-encoded, and
Basic/Digest/Bearer credentials), because a request line or a header can arrive in
an error message verbatim. Library records (aiohttp reports each malformed request
with a traceback of several KB) keep only the traceback's last line and are limited
to a few a minute, so a flood of bad requests cannot fill the journal.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal
from urllib.parse import unquote_plus

import structlog

from relay.ops import journal
from relay.ops.units import human_bytes

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# Every name=value pair, the name as sent: plain, or percent-encoded in part or whole
# ("?access%54oken=" is accessToken to the HTTP library, so it is a secret here too).
_PARAM = re.compile(r"([A-Za-z0-9_.%+-]+)(=|%3[Dd])([^&\s\"'\\]+)")
_SECRET_NAME = re.compile(r"(?i)(access_?token|token|password|passwd|secret)$")
# Credentials in a header: Basic/Bearer and a token; Digest and its key="value" list
# (not the word "Digest" in a sentence, as in the relay's own reasons).
_CREDENTIALS = re.compile(r"(?i)\b(Basic|Bearer)\s+[A-Za-z0-9+/=._~-]{4,}|\b(Digest)\s+(?=[A-Za-z-]+=)[^\r\n]+")
LIBRARY_RECORDS_PER_MINUTE = 10


def _param(match: re.Match[str]) -> str:
    name = match.group(1)
    plain = name
    for _ in range(3):  # decoded as often as a client could have encoded it
        plain = unquote_plus(plain)
    # An encoded "?" or "&" may run into the name ("%3FaccessToken"): the last piece counts.
    if _SECRET_NAME.search(re.split(r"[?&;/\s]", plain)[-1]):
        return f"{name}{match.group(2)}<redacted>"
    return match.group(0)


def _credentials(match: re.Match[str]) -> str:
    scheme = match.group(1) or match.group(2)
    if scheme.lower() == "basic":
        # Basic credentials are base64 of "user:password"; a word after "Basic" in a
        # sentence ("malformed Basic credentials") is not.
        token = match.group(0)[len(scheme) :].strip()
        try:
            if b":" not in base64.b64decode(token + "=" * (-len(token) % 4), validate=True):
                return match.group(0)
        except ValueError:
            return match.group(0)
    return f"{scheme} <redacted>"


def redact(text: str) -> str:
    text = _PARAM.sub(_param, text)
    return _CREDENTIALS.sub(_credentials, text)


def exception_line(exc: BaseException) -> str:
    """A library's exception as an operator reads it: its type and its whole message on
    one line. aiohttp's message for a malformed request spans lines and ends in a caret
    under the fault: the last line of a traceback would be that caret alone."""
    lines = (line.strip() for line in str(exc).splitlines())
    return f"{type(exc).__name__}: {' '.join(line for line in lines if line and set(line) != {'^'})}"


def _redact_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
        elif isinstance(value, list | tuple):
            event[key] = [redact(v) if isinstance(v, str) else v for v in value]
    return event


def _exception_in_one_line(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A library's traceback says nothing an operator can act on beyond its exception
    (aiohttp reports each malformed request with one of several KB)."""
    info = event.get("exc_info")
    if isinstance(info, tuple) and isinstance(info[1], BaseException):
        event["exception"] = exception_line(info[1])
        del event["exc_info"]
    elif isinstance(event.get("exception"), str):
        event["exception"] = event["exception"].strip().splitlines()[-1]
    return event


class _LibraryFlood(logging.Filter):
    """At most ``per_minute`` library records a minute; the next one let through says
    how many were dropped meanwhile."""

    def __init__(self, per_minute: int) -> None:
        super().__init__()
        self._per_minute = per_minute
        self._window = time.monotonic()
        self._passed = 0
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._window >= 60:
            self._window, self._passed = now, 0
        if self._passed >= self._per_minute:
            self.dropped += 1
            return False
        self._passed += 1
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} similar records dropped before this one)"
            self.dropped = 0
        return True


def configure(
    fmt: Literal["auto", "json", "console", "journal"] = "auto",
    level: str = "info",
    environ: Mapping[str, str] | None = None,
) -> None:
    """``auto``: the journal when stderr is systemd's journal stream, else readable lines
    on a terminal, else JSON lines. ``AXIS_RELAY_JOURNAL_SOCKET`` names another journal
    socket (tests, unusual systems)."""
    environ = os.environ if environ is None else environ
    stream = sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    people = fmt == "console" or (fmt == "auto" and not use_json)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        # For people: the gateway's local time and sizes in kB/MB; for machines: UTC, bytes.
        structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False)
        if people
        else structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if people:
        processors.append(_sizes_for_people)
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    if fmt == "journal" or (fmt == "auto" and journal.journal_stream_active(environ, stream)):
        sink = journal.JournalSink(environ.get("AXIS_RELAY_JOURNAL_SOCKET", journal.SOCKET), stream)
        structlog.configure(
            processors=[*processors, _redact_event, journal.renderer],
            wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
            logger_factory=lambda *_: journal.JournalLogger(sink),
            cache_logger_on_first_use=False,
        )
        library: logging.Handler = _JournalHandler(sink)
        library.addFilter(_LibraryFlood(LIBRARY_RECORDS_PER_MINUTE))
        root.handlers[:] = [library]
        return
    # Colour only for a terminal: escape codes in a file or a pipe are noise.
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[*processors, _redact_event, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library (aiohttp reports malformed or oversized
    # requests there): render those records as the same lines, warnings and up.
    handler = logging.StreamHandler(stream)
    handler.addFilter(_LibraryFlood(LIBRARY_RECORDS_PER_MINUTE))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[structlog.stdlib.add_logger_name, _exception_in_one_line, *processors, _redact_event],
        )
    )
    root.handlers[:] = [handler]


def _sizes_for_people(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """bytes=7512345 -> bytes='7.5 MB' (and every *_bytes field), on the console only."""
    for key, value in event.items():
        if (key == "bytes" or key.endswith("_bytes")) and isinstance(value, int) and not isinstance(value, bool):
            event[key] = human_bytes(value)
    return event


class _JournalHandler(logging.Handler):
    """Library records to the journal: the message and a traceback's last line, redacted."""

    def __init__(self, sink: journal.JournalSink) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            message += f": {exception_line(record.exc_info[1])}"
        event = {"event": "library_log", "logger": record.name, "message": redact(message)}
        self._sink.send(journal.fields_of(event, record.levelname.lower()))
