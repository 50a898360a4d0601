"""Device secrets stored hashed: `axis-relay hash-secret` and their verification.

scrypt, from the standard library. Its cost is paid once per distinct secret: a
verified (secret, hash) pair is remembered in memory, so a device sending a clip every
15 s does not spend a CPU-heavy hash on each one (this matters on a Raspberry Pi).
The hash itself runs in a worker thread: tens of milliseconds of CPU on the event loop
would stall every upload in progress.
HTTP Digest needs the plain password, so a device with a hashed password gets Basic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from collections.abc import Callable

PREFIX = "scrypt$"
N, R, P = 2**14, 8, 1
CACHE_LIMIT = 1024


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    b64 = base64.b64encode
    return f"{PREFIX}{N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def is_hashed(stored: str) -> bool:
    return stored.startswith(PREFIX)


class HashingRefused(Exception):
    """The sender was braked while its check waited its turn: it is refused unhashed."""


class SecretChecker:
    def __init__(self) -> None:
        self._verified: set[bytes] = set()  # successes only: a wrong guess is never cheap
        # One hash at a time: a storm of wrong passwords takes one core, not all of them.
        self._hashing = asyncio.Semaphore(1)

    async def matches(self, given: str, stored: str, may_hash: Callable[[], bool] | None = None) -> bool:
        """Whether ``given`` is the secret ``stored`` (plain or hashed). ``may_hash`` is
        asked again once the check's turn comes: guesses sent all at once are all let in
        before the first of them has failed, and the brake must hold them too."""
        if not is_hashed(stored):
            return hmac.compare_digest(given.encode(), stored.encode())
        key = hashlib.sha256(given.encode() + b"\0" + stored.encode()).digest()
        if key in self._verified:
            return True
        async with self._hashing:
            if may_hash is not None and not may_hash():
                raise HashingRefused
            if not await asyncio.to_thread(_scrypt_matches, given, stored):
                return False
        if len(self._verified) >= CACHE_LIMIT:
            self._verified.clear()
        self._verified.add(key)
        return True


def _scrypt_matches(given: str, stored: str) -> bool:
    try:
        n, r, p, salt, expected = stored.removeprefix(PREFIX).split("$")
        digest = hashlib.scrypt(given.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(digest, base64.b64decode(expected))
