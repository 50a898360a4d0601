"""Every reach into a dependency's private names, in one place, each with the versions
it was checked against, and a start-up check that fails loudly, naming the package and
its version, when a private name the relay relies on is gone.

- asyncio's ``SSLProtocol.max_size``: the TLS read buffer per connection (Python 3.11-3.13).
- aiohttp's ``ClientSession._retry_connection``: its one silent re-send on a reused
  connection, turned off (aiohttp 3.14).
- aiobotocore's ``AIOHTTPSession._get_session``: where botocore's aiohttp session is made,
  so the same switch reaches it (aiobotocore 2.25).
- the ssl module's ``_ssl._test_decode_cert``: a certificate file's expiry date, read
  without the cryptography package, which this one date cost 7 MiB of the relay's
  resident memory for (Python 3.11-3.13).
- botocore's ``JSONFileLoader._load_file``: where a data file is parsed, so
  ``relay.upload.botocore_data`` loads it lean (botocore 1.40).
- aiohttp's ``TCPSite``/``BaseSite`` slots (``_runner``, ``_ssl_context``, ``_backlog``,
  ``_server``, ``_host``, ``_port``, ``_bound_port``, ``_reuse_address``, ``_reuse_port``):
  ``relay.ingest.connections.GuardedSite.start`` runs the TLS handshake in a task of its
  own on these (aiohttp 3.14). aiohttp offers no public hook for either.
"""

from __future__ import annotations

import _ssl
import importlib.metadata
import ssl
import sys
from asyncio import sslproto
from typing import Any

import aiohttp
from aiobotocore.httpsession import AIOHTTPSession
from aiohttp import web
from botocore.loaders import JSONFileLoader

CHECKED = "Python 3.11-3.13, aiohttp 3.14, aiobotocore 2.25, botocore 1.40"


class CompatError(Exception):
    """A private name the relay relies on is gone from the installed version."""


def _version(package: str) -> str:
    if package == "python":
        return sys.version.split()[0]
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def missing(reaches: list[tuple[str, Any, str]]) -> list[str]:
    """Each (package, owner, name) whose name the owner lacks, as an operator reads it."""
    gone = []
    for package, owner, name in reaches:
        slots = getattr(owner, "__slots__", ())
        has = name in slots if name.startswith("_") and slots else hasattr(owner, name)
        if not has and name not in getattr(owner, "ATTRS", ()):
            gone.append(f"{package} {_version(package)}: {getattr(owner, '__name__', owner)}.{name} is gone")
    return gone


REACHES: list[tuple[str, Any, str]] = [
    ("python", sslproto.SSLProtocol, "max_size"),
    ("python", _ssl, "_test_decode_cert"),
    ("botocore", JSONFileLoader, "_load_file"),
    ("aiohttp", aiohttp.ClientSession, "_retry_connection"),
    ("aiobotocore", AIOHTTPSession, "_get_session"),
    *(("aiohttp", web.BaseSite, name) for name in ("_runner", "_ssl_context", "_backlog", "_server")),
    *(("aiohttp", web.TCPSite, name) for name in ("_host", "_port", "_bound_port", "_reuse_address", "_reuse_port")),
]


def check() -> None:
    """CompatError naming every private name that is gone, and what the relay was checked with."""
    if gone := missing(REACHES):
        raise CompatError(
            f"{'; '.join(gone)}. axis-relay was checked with {CHECKED}: install the versions in "
            "requirements/run.lock (make run / install.sh do)"
        )


def bound_tls_read_buffers(size: int) -> None:
    """Every TLS connection of this process (the relay owns it) reads into ``size`` bytes."""
    sslproto.SSLProtocol.max_size = size


def certificate_not_after(path: str) -> float:
    """When the first certificate of a PEM file expires, in epoch seconds. Raises OSError
    (ssl.SSLError) for a file that is not one, ValueError for a date it cannot read."""
    decoded = _ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    return float(ssl.cert_time_to_seconds(decoded["notAfter"]))


def one_attempt(session: aiohttp.ClientSession) -> None:
    """Make a failed request on a reused connection fail, as any other attempt does.

    aiohttp re-sends an idempotent request (a PUT of a clip or part) once, silently,
    when a kept-alive connection breaks under it: the retry is neither counted, nor
    logged, nor backed off. The relay's own policy does all three for every attempt.
    aiohttp offers no public switch for this (tests/test_wire_faults.py pins it).
    """
    session._retry_connection = False


class OneAttemptHTTPSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session, without aiohttp's one silent re-send."""

    async def _get_session(self, proxy_url: str | None) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession = await super()._get_session(proxy_url)
        one_attempt(session)
        return session
