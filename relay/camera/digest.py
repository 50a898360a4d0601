"""HTTP Digest as a client, the way AXIS devices ask for it (RFC 7616 and RFC 2617).

A device challenges with ``Digest realm="AXIS_ACCC8EB3494E", nonce="...",
algorithm=MD5, qop="auth"``; older firmware leaves out ``algorithm`` (MD5), some ask
for ``MD5-sess``, newer ones offer ``SHA-256``. A nonce that expired comes back as a
new challenge with ``stale=true``: that is not a wrong password, only a new nonce to
answer. Basic is used only when the device offers Basic and no Digest.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
# Strongest first, when a device offers several Digest challenges.
_PREFERENCE = ("SHA-256", "SHA-256-SESS", "MD5", "MD5-SESS")


class ChallengeError(Exception):
    """The device asked for authentication in a way the relay cannot answer."""


@dataclass
class DigestChallenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: str | None = None
    opaque: str | None = None
    stale: bool = False
    # Nonce count: one more for every request answered with this nonce.
    count: int = field(default=0, compare=False)


def _split_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """One WWW-Authenticate value may hold several challenges: 'Digest a=1, b=2, Basic realm=x'."""
    found: list[tuple[str, dict[str, str]]] = []
    for piece in re.split(r",?\s*(?=\b(?:Digest|Basic|Bearer|Negotiate)\s)", header.strip(), flags=re.IGNORECASE):
        scheme, _, rest = piece.strip().partition(" ")
        if not scheme:
            continue
        params = {
            m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in _PARAM.finditer(rest)
        }
        found.append((scheme.lower(), params))
    return found


def choose(headers: list[str]) -> DigestChallenge | str:
    """The challenge to answer: a Digest one, or ``"basic"``; ChallengeError if neither."""
    digests: list[DigestChallenge] = []
    basic = False
    unsupported: list[str] = []
    for header in headers:
        for scheme, params in _split_challenges(header):
            if scheme == "basic":
                basic = True
            elif scheme == "digest" and "nonce" in params:
                algorithm = params.get("algorithm", "MD5").upper()
                qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
                if algorithm not in _PREFERENCE or (qops and "auth" not in qops):
                    unsupported.append(f"Digest algorithm={algorithm} qop={','.join(qops)}")
                    continue
                digests.append(
                    DigestChallenge(
                        realm=params.get("realm", ""),
                        nonce=params["nonce"],
                        algorithm=algorithm,
                        qop="auth" if qops else None,
                        opaque=params.get("opaque"),
                        stale=params.get("stale", "").lower() == "true",
                    )
                )
    if digests:
        return min(digests, key=lambda d: _PREFERENCE.index(d.algorithm))
    if basic:
        return "basic"
    offered = "; ".join(unsupported) or " / ".join(headers) or "nothing"
    raise ChallengeError(f"the camera asks for authentication the relay cannot give ({offered})")


def basic_authorization(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def digest_authorization(
    challenge: DigestChallenge, username: str, password: str, method: str, uri: str, cnonce: str | None = None
) -> str:
    """The Authorization header answering ``challenge`` for one request (counts it)."""
    base = challenge.algorithm.removesuffix("-SESS")
    digest = _HASHES[base]

    def h(text: str) -> str:
        return digest(text.encode()).hexdigest()

    challenge.count += 1
    nc = f"{challenge.count:08x}"
    cnonce = cnonce or os.urandom(8).hex()
    ha1 = h(f"{username}:{challenge.realm}:{password}")
    if challenge.algorithm.endswith("-SESS"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    if challenge.qop:
        response = h(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:{challenge.qop}:{ha2}")
    else:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}")
    fields = [
        f'username="{_quote(username)}"',
        f'realm="{_quote(challenge.realm)}"',
        f'nonce="{_quote(challenge.nonce)}"',
        f'uri="{_quote(uri)}"',
        f"algorithm={challenge.algorithm}",
        f'response="{response}"',
    ]
    if challenge.qop:
        fields += [f"qop={challenge.qop}", f"nc={nc}", f'cnonce="{cnonce}"']
    if challenge.opaque is not None:
        fields.append(f'opaque="{_quote(challenge.opaque)}"')
    return "Digest " + ", ".join(fields)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
