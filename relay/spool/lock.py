"""One relay per spool: an exclusive lock held for the relay's whole life.

Two relays on one spool lose clips: the second one's start-up clears incoming/, where
the first is receiving a device's clip (the device gets a 503 and never resends), and
both would upload, evict and remove the same clips. The lock is flock(2) on a file in
the spool, released by the kernel however the process ends (SIGKILL, power cut: no
stale lock to clear by hand). The file holds the holder's PID, for the message.
The CLI's commands do not take it: they read, or move quarantined clips back into
queue/, which a running relay is built to pick up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "relay.lock"


class SpoolBusy(Exception):
    """Another relay holds this spool."""

    def __init__(self, spool_dir: Path, pid: str) -> None:
        self.pid = pid
        super().__init__(
            f"spool.dir {spool_dir} is in use by another relay (PID {pid}): one relay per spool. Stop that one "
            "first (systemctl stop axis-relay), or give this one a spool.dir of its own"
        )


def _pid_in(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"


def holder(spool_dir: Path) -> str | None:
    """The PID of the relay holding ``spool_dir``, or None when none does."""
    path = spool_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_in(fd)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def holding(spool_dir: Path) -> Iterator[None]:
    """Hold the spool until the block ends; SpoolBusy (naming the PID) if another relay does."""
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpoolBusy(spool_dir, _pid_in(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # the lock goes with the descriptor
