"""HTTP Digest as a client, the way AXIS devices ask for it (RFC 7616 and RFC 2617).

A device challenges with ``Digest realm="AXIS_ACCC8EB3494E", nonce="...",
algorithm=MD5, qop="auth"``; older firmware leaves out ``algorithm`` (MD5), some ask
for ``MD5-sess``, newer ones offer ``SHA-256``. A nonce that expired comes back as a
new challenge with ``stale=true``: that is not a wrong password, only a new nonce to
answer. Basic is used only when the device offers Basic and no Digest.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field

from relay import digest
from relay.digest import quote

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


def choose(headers: list[str]) -> DigestChallenge | str:
    """The challenge to answer: a Digest one, or ``"basic"``; ChallengeError if neither."""
    digests: list[DigestChallenge] = []
    basic = False
    unsupported: list[str] = []
    for header in headers:
        for scheme, params in digest.challenges(header):
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
    challenge.count += 1
    nc = f"{challenge.count:08x}"
    cnonce = cnonce or os.urandom(8).hex()
    answer = digest.response(
        challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        qop=challenge.qop,
        nc=nc,
        cnonce=cnonce,
    )
    fields = [
        f'username="{quote(username)}"',
        f'realm="{quote(challenge.realm)}"',
        f'nonce="{quote(challenge.nonce)}"',
        f'uri="{quote(uri)}"',
        f"algorithm={challenge.algorithm}",
        f'response="{answer}"',
    ]
    if challenge.qop:
        fields += [f"qop={challenge.qop}", f"nc={nc}", f'cnonce="{cnonce}"']
    if challenge.opaque is not None:
        fields.append(f'opaque="{quote(challenge.opaque)}"')
    return "Digest " + ", ".join(fields)
