"""`axis-relay gen-cert`: a local CA and a server certificate for the gateway.

The CA is what a device trusts (installed through VAPIX certificate management or
the device's web page); the server certificate names the gateway by every host name
and address a device may use in its recipient URL.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _alt_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


class CertError(Exception):
    """gen-cert cannot do what was asked without breaking what devices trust."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate, as a device's certificate page shows it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _new_ca(names: list[str], now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"axis-relay local CA ({names[0]})")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca, ca_key


def _existing_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The CA already in ``directory`` (the one every camera was given), if any."""
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    if not ca_cert.exists():
        return None
    if not ca_key.exists():
        raise CertError(
            f"{ca_cert} is here but {ca_key} is not, so a new certificate cannot be signed by the CA the cameras "
            f"trust: put ca.key back in {directory}, or run with --new-ca (then every camera that validates the "
            "relay's certificate must be given the new ca.crt)"
        )
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{ca_key} is not the EC key gen-cert makes; run with --new-ca to replace the CA")
    return x509.load_pem_x509_certificate(ca_cert.read_bytes()), key


def generate(directory: Path, names: list[str], *, new_ca: bool = False) -> dict[str, Path]:
    """Write relay.crt (server + CA chain) and relay.key into ``directory``, signed by
    the CA already there (ca.crt, ca.key), so cameras that trust it go on trusting the
    renewed certificate. A CA is made only where there is none, or with ``new_ca``."""
    if not names:
        raise ValueError("give at least one host name or IP address for the certificate")
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    existing = None if new_ca else _existing_ca(directory)
    ca, ca_key = existing or _new_ca(names, now)
    ca_name = ca.subject
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca_cert": directory / "ca.crt",
        "ca_key": directory / "ca.key",
        "cert": directory / "relay.crt",
        "key": directory / "relay.key",
    }
    if existing is None:
        paths["ca_cert"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        _write_key(paths["ca_key"], ca_key)
    paths["cert"].write_bytes(
        server.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    )
    _write_key(paths["key"], key)
    return paths


def ca_fingerprint(directory: Path) -> str:
    return fingerprint(x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes()))
