"""HTTP Digest's core (RFC 7616, RFC 2617), shared by both ends: the relay answering
devices (``relay.ingest.digest``) and the relay asking cameras (``relay.camera.digest``).

One parser for auth-params (RFC 7235: whitespace is allowed around ``=``; quoted
strings may hold ``\\"``), one table of hashes, one computation of the response.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

HASHES: dict[str, Callable[..., hashlib._Hash]] = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PARAM = re.compile(r'([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_QUOTED_PAIR = re.compile(r"\\(.)")
# The schemes a WWW-Authenticate value may list, one after another.
_SCHEME = re.compile(r",?\s*(?=\b(?:Digest|Basic|Bearer|Negotiate)\s)", re.IGNORECASE)


def auth_params(text: str) -> dict[str, str]:
    """``realm="x", qop=auth`` -> {"realm": "x", "qop": "auth"}; names in lower case,
    quoted values unescaped."""
    return {
        m.group(1).lower(): _QUOTED_PAIR.sub(r"\1", m.group(2)) if m.group(2) is not None else m.group(3)
        for m in _PARAM.finditer(text)
    }


def authorization_params(header: str) -> dict[str, str]:
    """The parameters of an ``Authorization: Digest ...`` header; {} for another scheme."""
    scheme, _, rest = header.strip().partition(" ")
    return auth_params(rest) if scheme.lower() == "digest" else {}


def challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """One WWW-Authenticate value may hold several: 'Digest a=1, b=2, Basic realm=x'."""
    found = []
    for piece in _SCHEME.split(header.strip()):
        scheme, _, rest = piece.strip().partition(" ")
        if scheme:
            found.append((scheme.lower(), auth_params(rest)))
    return found


def quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def response(
    algorithm: str,
    *,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
) -> str:
    """The request digest for ``algorithm`` (MD5, SHA-256, or either with -sess);
    without ``qop`` as RFC 2069 had it. KeyError for an algorithm not in HASHES."""
    hash_of = HASHES[algorithm.upper().removesuffix("-SESS")]

    def h(text: str) -> str:
        return hash_of(text.encode()).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")
