"""HTTP Digest authentication for devices (RFC 7616: MD5 and SHA-256, qop=auth).

Which scheme an AXIS recipient answers is not documented, so the relay offers Digest
beside Basic. Nonces are stateless: a timestamp signed with a key that lives as long
as the process, so they expire (``stale=true``) without a table to grow or leak.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass, field
from typing import Literal

from relay import digest

REALM = "axis-relay"
NONCE_LIFETIME_S = 300.0

NonceState = Literal["fresh", "stale", "bad"]
# "ok", "stale" (ours but expired: challenge again with a new nonce), or why it was refused.
Verdict = Literal[
    "ok",
    "stale",
    "unknown Digest nonce",
    "unsupported Digest algorithm",
    "Digest without qop=auth",
    "Digest uri does not match the request",
    "wrong username or password",
    "Digest nonce count replayed",
]
# Nonces whose last nonce count is remembered; an expired nonce is forgotten anyway.
MAX_NONCES_TRACKED = 4096


@dataclass
class DigestAuth:
    key: bytes = field(default_factory=lambda: os.urandom(32))
    lifetime_s: float = NONCE_LIFETIME_S
    # The highest nonce count used with each nonce: a captured Authorization header sent
    # again unchanged (same nc) is refused, for the nonce's whole life.
    _counts: dict[str, int] = field(default_factory=dict)

    def _sign(self, stamp: str) -> str:
        return hmac.new(self.key, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        stamp = f"{time.time():.3f}"
        return base64.b64encode(f"{stamp}:{self._sign(stamp)}".encode()).decode()

    def _nonce_state(self, nonce: str) -> NonceState:
        try:
            stamp, _, signature = base64.b64decode(nonce, validate=True).decode().partition(":")
            issued = float(stamp)
        except ValueError:
            return "bad"
        if not hmac.compare_digest(signature, self._sign(stamp)):
            return "bad"
        return "fresh" if time.time() - issued <= self.lifetime_s else "stale"

    def challenges(self, stale: bool = False) -> list[str]:
        nonce = self.new_nonce()
        extra = ", stale=true" if stale else ""
        return [
            f'Digest realm="{REALM}", qop="auth", algorithm={name}, nonce="{nonce}"{extra}'
            for name in ("SHA-256", "MD5")
        ]

    def verify(self, params: dict[str, str], method: str, uri: str, username: str, password: str) -> Verdict:
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in digest.HASHES:
            return "unsupported Digest algorithm"
        if params.get("qop") != "auth" or not all(params.get(k) for k in ("nonce", "nc", "cnonce", "response")):
            return "Digest without qop=auth"
        if params.get("uri") != uri:
            return "Digest uri does not match the request"
        state = self._nonce_state(params["nonce"])
        if state == "bad":
            return "unknown Digest nonce"
        if state == "stale":
            return "stale"
        expected = digest.response(
            algorithm,
            username=username,
            realm=REALM,
            password=password,
            method=method,
            uri=uri,
            nonce=params["nonce"],
            qop="auth",
            nc=params["nc"],
            cnonce=params["cnonce"],
        )
        user_ok = hmac.compare_digest(params.get("username", "").encode(), username.encode())
        response_ok = hmac.compare_digest(params["response"].encode(), expected.encode())
        if not (user_ok and response_ok):
            return "wrong username or password"
        return "ok" if self._count_is_new(params["nonce"], params["nc"]) else "Digest nonce count replayed"

    def _count_is_new(self, nonce: str, nc: str) -> bool:
        try:
            count = int(nc, 16)
        except ValueError:
            return False
        if count <= self._counts.get(nonce, 0):
            return False
        if len(self._counts) >= MAX_NONCES_TRACKED:
            for old in [n for n in self._counts if self._nonce_state(n) != "fresh"]:
                del self._counts[old]
        if len(self._counts) >= MAX_NONCES_TRACKED:
            # Still full (a flood of fresh nonces): the oldest half is forgotten, and a
            # header captured under one of those could be replayed once more.
            for old in list(self._counts)[: MAX_NONCES_TRACKED // 2]:
                del self._counts[old]
        self._counts[nonce] = count
        return True
