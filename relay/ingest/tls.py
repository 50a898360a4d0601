"""How the ingest listener speaks TLS: its context (TLS 1.2 at least; ChaCha20-Poly1305
first where the gateway's CPU has no AES instructions), the read buffer of every TLS
connection, and when the certificate expires."""

from __future__ import annotations

import ssl
from pathlib import Path

from relay import _compat


class TlsError(Exception):
    """The certificate and key cannot serve: the message names the files and the reason."""


# asyncio gives every TLS connection a 256 KiB read buffer, zeroed (so resident) when
# the connection opens, and asks OpenSSL for up to that much per read. A camera's clip
# arrives some 32 KiB per read, so 64 KiB is plenty: 192 KiB less per connection (24 MiB
# with 128 cameras), and no more reads for a fast sender than aiohttp's own 64 KiB.
TLS_READ_BUFFER = 64 * 1024


def bound_tls_read_buffers() -> None:
    """Every TLS connection of this process (the relay owns it) reads into 64 KiB."""
    _compat.bound_tls_read_buffers(TLS_READ_BUFFER)


# Server-chosen, forward-secret AEAD suites of TLS 1.2, ChaCha20-Poly1305 first.
CHACHA20_FIRST = (
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)


def tls_context(cert: Path, key: Path, *, prefer_chacha20: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if prefer_chacha20:
        # On a core without AES instructions (a Raspberry Pi 4), AES-GCM costs several
        # times what ChaCha20-Poly1305 does: 43 % less ingest CPU with AES-NI masked
        # (bench/fleet.py --no-aes --tls chacha20). The server can impose its order only
        # in TLS 1.2: Python's ssl cannot order TLS 1.3 suites, where the camera's
        # preference (AES-GCM) would win.
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(CHACHA20_FIRST)
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"ingest.tls_cert/tls_key: cannot load {cert} / {key}: {exc}") from None
    return context


def cert_not_after(cert: Path) -> float | None:
    """When the (first) certificate in the file expires, in epoch seconds; None if unreadable."""
    try:
        return _compat.certificate_not_after(str(cert))
    except (OSError, ValueError, KeyError):
        return None
