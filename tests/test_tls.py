"""gen-cert makes certificates a device can verify; SIGHUP-style reload swaps them live."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from relay.dev.local_s3 import LocalS3, free_port
from relay.ops.certs import fingerprint
from tests.support.device import Device, read_answer
from tests.support.harness import (
    PATH,
    TLS,
    axis_relay_sync,
    raw_config,
    relay_config,
    running_relay,
    wait_until,
    write_config,
)
from tests.support.relay_process import relay_process


def run_gen_cert(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return axis_relay_sync("gen-cert", "127.0.0.1", "relay.local", "--dir", str(directory), *extra)


def gen_cert(directory: Path) -> Path:
    result = run_gen_cert(directory)
    assert result.returncode == 0, result.stderr
    assert "Validate server certificate" in result.stdout
    assert (directory / "relay.key").stat().st_mode & 0o077 == 0
    return directory


def trusting_only(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))  # verifies the name: 127.0.0.1
    return context


async def test_generated_certificate_verifies_and_reloads_without_dropping_uploads(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    first, second = gen_cert(tmp_path / "first"), gen_cert(tmp_path / "second")
    live = tmp_path / "live"
    shutil.copytree(first, live)
    config = relay_config(
        tmp_path,
        tls,
        s3_server.endpoint_url,
        bucket,
        ingest={"tls_cert": str(live / "relay.crt"), "tls_key": str(live / "relay.key")},
    )
    reload = asyncio.Event()
    async with running_relay(config, tls, reload=reload) as relay:
        port = relay.port
        old_ca, new_ca = trusting_only(first / "ca.crt"), trusting_only(second / "ca.crt")
        assert (await Device("127.0.0.1", port, old_ca).request("GET", PATH)).status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            await Device("127.0.0.1", port, new_ca).request("GET", PATH)
        # Older firmware may speak only TLS 1.2: still served.
        tls12 = trusting_only(first / "ca.crt")
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        assert (await Device("127.0.0.1", port, tls12).request("GET", PATH)).status == 200

        # A device is mid-upload when the certificate is renewed and reloaded.
        reader, writer = await Device("127.0.0.1", port, old_ca).start_clip(PATH, os.urandom(1000), 2000)
        await wait_until(lambda: any((relay.spool / "incoming").iterdir()), what="the upload in progress")
        for name in ("relay.crt", "relay.key"):
            shutil.copy(second / name, live / name)
        reload.set()
        await wait_until(lambda: not reload.is_set(), what="the reload to be taken")

        async def new_cert_served() -> bool:
            try:
                return (await Device("127.0.0.1", port, new_ca).request("GET", PATH)).status == 200
            except ssl.SSLError:
                return False

        await wait_until(new_cert_served, what="the new certificate on new connections")
        writer.write(os.urandom(1000))
        answer = await asyncio.wait_for(read_answer(reader), 10)
        writer.close()
        assert answer.status == 200  # the upload that began under the old certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            await Device("127.0.0.1", port, old_ca).request("GET", PATH)


async def test_sighup_reloads_the_certificate_in_the_real_process(tmp_path: Path, tls: TLS) -> None:
    import signal

    certs = gen_cert(tmp_path / "certs")
    raw = raw_config(
        tmp_path,
        tls,
        f"https://127.0.0.1:{free_port()}",
        "clips",
        ingest={"tls_cert": str(certs / "relay.crt"), "tls_key": str(certs / "relay.key")},
    )
    async with relay_process(write_config(tmp_path / "relay.toml", raw), trusting_only(certs / "ca.crt")) as relay:
        relay.signal(signal.SIGHUP)
        event = await relay.wait_for("tls_reloaded")
        assert event["cert"] == str(certs / "relay.crt")
        device = relay.device
        assert (await device.request("GET", PATH)).status == 200
        assert await relay.stop() == 0


def test_ingest_refuses_tls_older_than_1_2(tmp_path: Path) -> None:
    # Clients here may not even offer TLS 1.1 any more, so the floor is checked on the
    # context the relay builds rather than by a handshake that could not fail.
    from relay.ingest.tls import tls_context

    certs = gen_cert(tmp_path / "certs")
    context = tls_context(certs / "relay.crt", certs / "relay.key")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


async def test_prefer_chacha20_makes_the_relay_choose_it_over_tls_1_2(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    """A device offering AES-GCM first (as OpenSSL's defaults do) gets ChaCha20-Poly1305
    when the gateway asks for it, and AES-GCM over TLS 1.3 when it does not."""
    for prefer, version, cipher in ((True, "TLSv1.2", "CHACHA20"), (False, "TLSv1.3", "AES")):
        config = relay_config(tmp_path, tls, s3_server.endpoint_url, bucket, ingest={"tls_prefer_chacha20": prefer})
        async with running_relay(config, tls) as relay:
            context = tls.client_context()
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port, ssl=context)
            try:
                ssl_object = writer.get_extra_info("ssl_object")
                assert ssl_object.version() == version
                assert cipher in ssl_object.cipher()[0]
                writer.write(f"GET {PATH} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".encode())
                assert (await read_answer(reader)).status == 200
            finally:
                writer.close()


def ca_fingerprint(directory: Path) -> str:
    return fingerprint(x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes()))


async def test_gen_cert_twice_keeps_the_ca_the_cameras_trust(
    tmp_path: Path, tls: TLS, s3_server: LocalS3, bucket: str
) -> None:
    """Renewing the certificate keeps the CA (a camera that trusts it trusts the new
    certificate); only --new-ca replaces it, saying what that breaks; without ca.key
    the renewal is refused with the way out."""
    certs = tmp_path / "tls"
    first = run_gen_cert(certs)
    assert first.returncode == 0, first.stderr
    assert "A NEW CA" in first.stdout
    trusted, old_cert = ca_fingerprint(certs), (certs / "relay.crt").read_bytes()
    camera_trust = tmp_path / "camera-trusts.crt"
    shutil.copy(certs / "ca.crt", camera_trust)

    renewed = run_gen_cert(certs)
    assert renewed.returncode == 0, renewed.stderr
    assert ca_fingerprint(certs) == trusted
    assert trusted in renewed.stdout
    assert (certs / "relay.crt").read_bytes() != old_cert  # a new certificate, the same CA
    config = relay_config(
        tmp_path,
        tls,
        s3_server.endpoint_url,
        bucket,
        ingest={"tls_cert": str(certs / "relay.crt"), "tls_key": str(certs / "relay.key")},
    )
    async with running_relay(config, tls) as relay:
        # The camera was given the CA once, before the renewal: it still trusts the relay.
        assert (await Device("127.0.0.1", relay.port, trusting_only(camera_trust)).request("GET", PATH)).status == 200

    replaced = run_gen_cert(certs, "--new-ca")
    assert replaced.returncode == 0, replaced.stderr
    assert ca_fingerprint(certs) != trusted
    assert "refuse it until they are given the new ca.crt" in replaced.stderr

    (certs / "ca.key").unlink()
    refused = run_gen_cert(certs)
    assert refused.returncode == 1
    assert "put ca.key back" in refused.stderr
    assert "--new-ca" in refused.stderr
