"""Logging to journald through its native protocol, when systemd runs the relay.

systemd sets ``JOURNAL_STREAM`` (device:inode of the stream it connected to stderr);
when stderr is that stream, each event goes to the journal socket as one datagram of
fields instead of a line (``systemd.journal-fields(7)``, the native protocol):

- ``PRIORITY`` from the level, so ``journalctl -p warning`` shows exactly the problems;
- ``MESSAGE`` a sentence a person reads ("clip uploaded: cam-entrance/2026/11/28/x.mkv,
  8.0 MB in 0.4 s, 1 attempt");
- every key of the event a field of its own (``EVENT=clip_uploaded``, ``CAMERA=...``,
  ``CLIP_ID=...``, ``KEY=...``), so ``journalctl -u axis-relay CAMERA=cam-entrance``
  works for every event, since every event names its camera ``camera``;
- ``SYSLOG_IDENTIFIER=axis-relay``.

A datagram the socket refuses (journald restarting, a message too large) is written
to stderr as a line instead: a log line is never lost to the journal's hiccups.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, TextIO

from relay.ops.units import human_bytes

SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "axis-relay"
# syslog(3) priorities.
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2, "exception": 3, "fatal": 2}
_FIELD = re.compile(r"[^A-Z0-9_]")
# Keys structlog adds that the journal has its own fields for.
_OWN = {"event", "level", "timestamp", "log_level"}


def journal_stream_active(environ: Mapping[str, str], stream: TextIO) -> bool:
    """True when ``stream`` is the journal stream systemd gave this process."""
    wanted = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in wanted.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def field_name(key: str) -> str:
    name = _FIELD.sub("_", key.upper()).lstrip("_")
    return name if name and not name[0].isdigit() else f"F_{name}"


def encode(fields: Mapping[str, str]) -> bytes:
    """The native protocol: ``NAME=value\\n``, or for a value with a newline ``NAME\\n``,
    its length as 64-bit little-endian, the value, ``\\n``."""
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", errors="replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, default=str, sort_keys=True)


# A sentence for each event an operator meets most; any other reads "event: key=value, ...".
_SENTENCES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "clip_accepted": lambda e: (
        f"clip received from {e.get('camera')}: {e.get('filename')}, {human_bytes(e.get('bytes'))} "
        f"in {e.get('seconds')} s"
    ),
    "clip_uploaded": lambda e: (
        f"clip uploaded: {e.get('key') or 'key chosen by the endpoint'}, {human_bytes(e.get('bytes'))} in "
        f"{e.get('seconds')} s, {e.get('attempts')} attempt{'' if e.get('attempts') == 1 else 's'}"
    ),
    "upload_retry": lambda e: (
        f"upload failed ({e.get('reason')}), attempt {e.get('attempt')}; next in {e.get('wait_s')} s"
    ),
    "clip_quarantined": lambda e: f"clip quarantined: {e.get('clip_id')}: {e.get('reason')}; {e.get('fix', '')}".rstrip(
        "; "
    ),
    "clip_rejected": lambda e: f"clip refused from {e.get('camera')}: {e.get('status')} {e.get('reason')}",
    "clip_evicted": lambda e: f"clip evicted unsent to make room: {e.get('clip_id')}, {human_bytes(e.get('bytes'))}",
    "gap_detected": lambda e: (
        f"gap in {e.get('camera')}'s footage: {e.get('start')} to {e.get('end')} "
        f"({e.get('seconds')} s), {e.get('reason')}"
    ),
    "gap_filled": lambda e: (
        f"gap filled for {e.get('camera')}: {e.get('start')} to {e.get('end')} ({e.get('seconds')} s)"
    ),
    "gap_unfillable": lambda e: (
        f"gap cannot be filled for {e.get('camera')}: {e.get('start')} to {e.get('end')}: {e.get('reason')}"
    ),
    "gap_retrying": lambda e: (
        f"gap for {e.get('camera')} to be tried again in {e.get('retry_in_s')} s: {e.get('reason')}"
    ),
    "relay_started": lambda e: f"relay started: devices send to {', '.join(e.get('listen') or [])}",
    "relay_stopped": lambda e: (
        f"relay stopped after {e.get('uptime_s')} s: {e.get('clips_accepted')} clips accepted, "
        f"{e.get('clips_uploaded')} uploaded, {e.get('left_queued')} left queued"
    ),
}


def sentence(event: Mapping[str, Any]) -> str:
    name = str(event.get("event", ""))
    if name in _SENTENCES:
        try:
            return _SENTENCES[name](event)
        except (TypeError, ValueError, KeyError):
            pass  # an event without the usual keys: the plain form
    rest = ", ".join(f"{k}={_text(v)}" for k, v in event.items() if k not in _OWN and v is not None)
    return f"{name}: {rest}" if rest else name


def fields_of(event: Mapping[str, Any], level: str) -> dict[str, str]:
    fields = {
        "MESSAGE": sentence(event),
        "PRIORITY": str(PRIORITIES.get(level, 6)),
        "SYSLOG_IDENTIFIER": IDENTIFIER,
        "EVENT": str(event.get("event", "")),
    }
    for key, value in event.items():
        if key in _OWN or value is None:
            continue
        fields.setdefault(field_name(key), _text(value))
    return fields


class JournalSink:
    """One datagram socket to journald; never raises to the caller."""

    def __init__(self, path: str = SOCKET, fallback: TextIO | None = None) -> None:
        self._path = path
        self._fallback = fallback or sys.stderr
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.failures = 0

    def send(self, fields: Mapping[str, str]) -> None:
        try:
            self._socket.sendto(encode(fields), self._path)
        except OSError:
            # Journald away or the message too large: the line still reaches stderr,
            # which systemd also hands to the journal.
            self.failures += 1
            print(json.dumps(dict(fields), sort_keys=True), file=self._fallback, flush=True)


class JournalLogger:
    """structlog's logger when logging to journald: takes the fields the renderer made."""

    def __init__(self, sink: JournalSink) -> None:
        self._sink = sink

    def msg(self, fields: Mapping[str, str]) -> None:
        self._sink.send(fields)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def renderer(_: Any, level: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog's last step: the event as journal fields, for ``JournalLogger.msg``."""
    return {"fields": fields_of(event, level)}
