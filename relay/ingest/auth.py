"""Who may send clips: a device is named by its URL and proven by its credentials.

AXIS recipients carry either a login/password (HTTP Basic or Digest here) or, as in Axis' own
integration examples, a token appended to the URL as ``accessToken=...``.
Secrets are compared in constant time, may be stored hashed (relay/ingest/secret_hash.py), and
are never logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from relay.config import DeviceConfig
from relay.digest import authorization_params
from relay.ingest.digest import DigestAuth
from relay.ingest.secret_hash import SecretChecker, is_hashed

TOKEN_PARAMS = ("accessToken", "access_token", "token")


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    reason: str = ""
    stale: bool = False  # a Digest nonce that was ours but expired: challenge again
    # False when the request carried no credentials at all: the first request of every
    # Digest handshake does, by design; it is not a wrong guess.
    presented: bool = True


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


async def authenticate(
    device: DeviceConfig,
    query: Mapping[str, str],
    authorization: str | None,
    *,
    digest: DigestAuth | None = None,
    checker: SecretChecker | None = None,
    method: str = "",
    uri: str = "",
    may_hash: Callable[[], bool] | None = None,
) -> AuthResult:
    """Checks the credentials; HashingRefused when a hashed secret's check would be due
    but ``may_hash`` (the login brake) says no."""
    checker = checker or SecretChecker()
    if device.token is not None:
        for name in TOKEN_PARAMS:
            if name in query:
                if await checker.matches(query[name], device.token.get_secret_value(), may_hash):
                    return AuthResult(True)
                return AuthResult(False, "wrong token")
    if device.password is not None and authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return AuthResult(False, "malformed Basic credentials")
            user_ok = _same(user, device.username or "")
            password_ok = await checker.matches(password, device.password.get_secret_value(), may_hash)
            if user_ok and password_ok:
                return AuthResult(True)
            return AuthResult(False, "wrong username or password")
        if scheme.lower() == "digest" and digest is not None:
            if is_hashed(device.password.get_secret_value()):
                return AuthResult(False, "the password is stored hashed, which Digest cannot use; use Basic")
            verdict = digest.verify(
                authorization_params(authorization),
                method,
                uri,
                device.username or "",
                device.password.get_secret_value(),
            )
            if verdict == "ok":
                return AuthResult(True)
            if verdict == "stale":
                return AuthResult(False, "Digest nonce expired", stale=True)
            return AuthResult(False, verdict)
    return AuthResult(False, "no credentials", presented=False)


def public_query(query: Mapping[str, str]) -> dict[str, str]:
    """The query parameters worth keeping with a clip: everything but secrets."""
    return {k: v for k, v in query.items() if k not in TOKEN_PARAMS}
