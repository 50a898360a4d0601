"""systemd's notify protocol: READY, STATUS, STOPPING and watchdog pings.

A few lines over a datagram socket (sd_notify(3)); no libsystemd. Does nothing when
the relay is not started by systemd (no NOTIFY_SOCKET).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping


class Notifier:
    def __init__(self, environ: Mapping[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # '@' names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval_s = int(usec) / 1e6 / 2 if usec.isdigit() and mine else None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, **fields: str) -> None:
        if not self._address:
            return
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        # systemd gone or its socket full: never a reason to stop relaying clips.
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
            contextlib.suppress(OSError),
        ):
            # MSG_DONTWAIT: a full socket drops this message instead of blocking the loop.
            sock.sendto(message, socket.MSG_DONTWAIT, self._address)


async def keep_informed(notifier: Notifier, alive: Callable[[], bool], status: Callable[[], str]) -> None:
    """STATUS every few seconds; WATCHDOG=1 only while the loop runs (this task is
    scheduled) and ``alive()`` (the upload workers) holds. Once it does not, the pings
    stop, whatever else still runs, and systemd restarts the relay."""
    if not notifier.enabled:
        return
    interval = min(notifier.watchdog_interval_s or 10.0, 10.0)
    while alive():
        fields = {"status": status()}
        if notifier.watchdog_interval_s:
            fields["watchdog"] = "1"
        notifier.send(**fields)
        await asyncio.sleep(interval)
