"""HTTP Digest (RFC 7616) checked with an independent client: aiohttp's DigestAuthMiddleware."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.dev.local_s3 import LocalS3
from relay.digest import authorization_params
from relay.ingest.digest import DigestAuth
from tests.support.harness import (
    DEVICE,
    TLS,
    RunningRelay,
    axis_relay,
    list_keys,
    object_bytes,
    relay_config,
    running_relay,
    wait_until,
)


async def post(relay: RunningRelay, tls: TLS, user: str, password: str, body: bytes) -> int:
    url = f"https://127.0.0.1:{relay.port}/upload/{DEVICE}"
    connector = aiohttp.TCPConnector(ssl=tls.client_context())
    async with aiohttp.ClientSession(
        connector=connector, middlewares=(aiohttp.DigestAuthMiddleware(user, password),)
    ) as session:
        headers = {"Content-Type": "video/x-matroska", "Content-Disposition": 'attachment; filename="digest.mkv"'}
        async with session.post(url, data=body, headers=headers) as answer:
            return answer.status


async def test_digest_right_and_wrong(relay: RunningRelay, tls: TLS, s3: Any, bucket: str) -> None:
    clip = os.urandom(50_000)
    assert await post(relay, tls, "root", "pass-word", clip) == 200
    assert await post(relay, tls, "root", "wrong", clip) == 401
    assert await post(relay, tls, "nobody", "pass-word", clip) == 401
    await wait_until(lambda: relay.stats.clips_uploaded == 1, what="the upload")
    [key] = await list_keys(s3, bucket)
    assert await object_bytes(s3, bucket, key) == clip
    assert relay.stats.clips_accepted == 1


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_expired_nonce_is_stale_and_forged_nonce_is_refused(algorithm: str) -> None:
    import hashlib

    auth = DigestAuth(lifetime_s=-1)  # every nonce is already expired
    [challenge] = [c for c in auth.challenges() if f"algorithm={algorithm}" in c]
    nonce = authorization_params(challenge)["nonce"]
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[algorithm]

    def hexd(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1, ha2 = hexd("u:axis-relay:p"), hexd("POST:/upload/x")
    params = {"username": "u", "nonce": nonce, "uri": "/upload/x", "qop": "auth", "nc": "00000001"}
    params |= {"cnonce": "c", "algorithm": algorithm, "response": hexd(f"{ha1}:{nonce}:00000001:c:auth:{ha2}")}
    assert auth.verify(params, "POST", "/upload/x", "u", "p") == "stale"
    assert DigestAuth(key=auth.key).verify(params, "POST", "/upload/x", "u", "p") == "ok"
    forged = dict(params, nonce="MTIzOmFiYw==")
    assert auth.verify(forged, "POST", "/upload/x", "u", "p") == "unknown Digest nonce"


async def test_hashed_secrets_from_hash_secret(tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str) -> None:
    async def hashed(secret: str) -> str:
        code, out, _ = await axis_relay("hash-secret", stdin=secret.encode() + b"\n")
        assert code == 0
        return out.strip()

    token_hash, password_hash = await hashed("tok-hashed"), await hashed("pw-hashed")
    assert token_hash.startswith("scrypt$")
    assert "tok-hashed" not in token_hash
    config = relay_config(
        tmp_path,
        tls,
        s3_server.endpoint_url,
        bucket,
        devices={DEVICE: {"token": token_hash, "username": "root", "password": password_hash}},
    )
    async with running_relay(config, tls) as relay:
        ok = await relay.device.post_clip(f"/upload/{DEVICE}?accessToken=tok-hashed", b"a" * 100)
        assert ok.status == 200
        again = await relay.device.post_clip(f"/upload/{DEVICE}?accessToken=tok-hashed", b"b" * 100)
        assert again.status == 200  # second time from the verified-secret cache
        bad = await relay.device.post_clip(f"/upload/{DEVICE}?accessToken={token_hash}", b"c" * 100)
        assert bad.status == 401  # the hash itself is not a credential
        basic = base64.b64encode(b"root:pw-hashed").decode()
        path = f"/upload/{DEVICE}"
        assert (
            await relay.device.post_clip(path, b"d", extra_headers={"Authorization": f"Basic {basic}"})
        ).status == 200
        challenge = await relay.device.request("GET", path)
        assert challenge.status == 401
        assert challenge.headers["www-authenticate"].startswith("Basic")  # no Digest for a hashed password


async def test_a_digest_device_is_never_braked_for_its_handshakes(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    """Every Digest handshake opens with a request that carries no credentials; those are
    not wrong guesses. Twelve clips in a minute, with a brake of 10 failures a minute."""
    config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket, ingest={"auth_failures_per_minute": 10})
    async with running_relay(config, tls) as relay:
        statuses = [await post(relay, tls, "root", "pass-word", os.urandom(1000)) for _ in range(12)]
    assert statuses == [200] * 12


def test_a_replayed_nonce_count_is_refused() -> None:
    import hashlib

    auth = DigestAuth()
    nonce = authorization_params(auth.challenges()[0])["nonce"]

    def params(nc: str) -> dict[str, str]:
        def h(text: str) -> str:
            return hashlib.sha256(text.encode()).hexdigest()

        ha1, ha2 = h("root:axis-relay:pass-word"), h("POST:/upload/x")
        response = h(f"{ha1}:{nonce}:{nc}:c1:auth:{ha2}")
        fields = {"username": "root", "nonce": nonce, "nc": nc, "cnonce": "c1", "qop": "auth", "uri": "/upload/x"}
        return {**fields, "algorithm": "SHA-256", "response": response}

    assert auth.verify(params("00000001"), "POST", "/upload/x", "root", "pass-word") == "ok"
    # The same header again, captured and replayed:
    assert auth.verify(params("00000001"), "POST", "/upload/x", "root", "pass-word") == "Digest nonce count replayed"
    assert auth.verify(params("00000002"), "POST", "/upload/x", "root", "pass-word") == "ok"


async def test_a_digest_answer_with_spaces_around_equals_is_accepted(relay: RunningRelay, tls: TLS) -> None:
    """RFC 7616 writes auth-params as ``token BWS "=" BWS value``: whitespace around '='
    is allowed, and a device that sends it is let in (one parser for both ends)."""
    from relay import digest

    url = f"https://127.0.0.1:{relay.port}/upload/{DEVICE}"
    headers = {"Content-Type": "video/x-matroska", "Content-Disposition": 'attachment; filename="spaced.mkv"'}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls.client_context())) as session:
        async with session.post(url, data=b"x" * 1000, headers=headers) as challenge:
            assert challenge.status == 401
            offered = [digest.auth_params(h.partition(" ")[2]) for h in challenge.headers.getall("WWW-Authenticate")]
        nonce = next(p["nonce"] for p in offered if p.get("algorithm") == "SHA-256")
        uri = f"/upload/{DEVICE}"
        answer = digest.response(
            "SHA-256", username="root", realm="axis-relay", password="pass-word", method="POST", uri=uri,
            nonce=nonce, qop="auth", nc="00000001", cnonce="abc",
        )  # fmt: skip
        spaced = (
            f'Digest username = "root", realm= "axis-relay", nonce ="{nonce}", uri = "{uri}", algorithm = SHA-256, '
            f'qop = auth, nc = 00000001, cnonce = "abc", response = "{answer}"'
        )
        async with session.post(url, data=b"x" * 1000, headers={**headers, "Authorization": spaced}) as accepted:
            assert accepted.status == 200
