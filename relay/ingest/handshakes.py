"""Failed TLS handshakes on the ingest port: the commissioning faults an installer must see.

A camera that does not trust the relay's certificate, a recipient URL that says
``http://``, a firmware that offers only TLS 1.0: each fails before any request exists,
so nothing else in the relay would count or log it. Here every failure is

- counted by reason (``axis_relay_tls_handshake_failures_total{reason, device}``);
- logged at warning, a few lines per source however many fail: the first at once, then
  one summary line per source every ``SUMMARY_EVERY_S`` while failures go on;
- pinned on the configured camera whose address it came from (``devices.<name>.address``
  or the host of ``camera.url``), for /healthz and the status page, until a handshake
  from that address succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import structlog

from relay.config import DeviceConfig
from relay.ops.stats import HandshakeTrouble, RelayStats

log = structlog.get_logger("relay.ingest")

SUMMARY_EVERY_S = 300.0
# Sources remembered for the log's rate limit; past this the quietest are summarised early.
MAX_SOURCES = 4096
# A camera's handshake trouble is forgotten after this long without another failure.
TROUBLE_FORGET_S = 3600.0

# OpenSSL's reason names, as ssl.SSLError.reason gives them.
_BY_OPENSSL_REASON = {
    # The client sent an alert: it does not accept the certificate we showed it.
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca",
    "SSLV3_ALERT_BAD_CERTIFICATE": "unknown_ca",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "unknown_ca",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "unknown_ca",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unknown_ca",
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "NO_PROTOCOLS_AVAILABLE": "protocol_version",
    "VERSION_TOO_LOW": "protocol_version",
    "HTTP_REQUEST": "plain_http",
    "HTTPS_PROXY_REQUEST": "plain_http",
    "WRONG_VERSION_NUMBER": "not_tls",
    "UNKNOWN_PROTOCOL": "not_tls",
    "PACKET_LENGTH_TOO_LONG": "not_tls",
    "RECORD_LAYER_FAILURE": "not_tls",
    "UNEXPECTED_RECORD": "not_tls",
    "UNEXPECTED_MESSAGE": "not_tls",
    "LENGTH_MISMATCH": "not_tls",
    "BAD_PACKET_LENGTH": "not_tls",
}

FIXES = {
    "unknown_ca": "install the relay's CA (gen-cert's ca.crt) on the camera, under System > Security > CA "
    "certificates (docs/setup.md, step 3, TLS), or turn off certificate validation in its recipient",
    "protocol_version": "the client offers only TLS older than 1.2; update the device's firmware "
    "(the relay speaks TLS 1.2 and 1.3)",
    "plain_http": "the recipient's URL says http://; make it https:// (the ingest port speaks only TLS)",
    "not_tls": "something that is not TLS connects to the ingest port; check what runs at that address",
    "timeout": "the handshake did not finish within ingest.head_timeout_s; check the network path and the "
    "device's load",
    "closed": "the client hung up during the handshake; a camera that does so may not trust the relay's "
    "certificate: install the relay's CA on it or turn off certificate validation",
    "other": "see the error; check the device's TLS settings",
}

SAYS = {
    "unknown_ca": "does not trust the relay's certificate",
    "protocol_version": "offers a TLS version the relay refuses",
    "plain_http": "sends plain HTTP to the TLS port",
    "not_tls": "sends something that is not TLS",
    "timeout": "does not finish its TLS handshake",
    "closed": "hangs up during the TLS handshake",
    "other": "fails its TLS handshake",
}


def reason_of(exc: BaseException) -> str:
    """The failure's kind, from what asyncio's start_tls raised."""
    if isinstance(exc, ssl.SSLError):
        return _BY_OPENSSL_REASON.get(str(exc.reason or "").upper(), "other")
    # asyncio aborts a handshake past its deadline with ConnectionAbortedError.
    if isinstance(exc, ConnectionAbortedError):
        return "timeout"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | EOFError):
        return "closed"
    return "other"


def plain_address(address: str) -> str:
    """An IPv4 address seen through a dual-stack socket (::ffff:a.b.c.d) as itself."""
    return address.removeprefix("::ffff:")


async def camera_addresses(devices: Mapping[str, DeviceConfig], timeout_s: float = 2.0) -> dict[str, str]:
    """Address -> device, for pinning failures on a camera: ``address`` where it is set,
    else the host of ``camera.url`` (a name is looked up once, at start, best effort)."""
    found: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    for name, device in devices.items():
        host = device.address or (urlsplit(device.camera.url).hostname if device.camera else None)
        if not host:
            continue
        try:
            found[str(ipaddress.ip_address(host))] = name
            continue
        except ValueError:
            pass
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(timeout_s):
                for *_, sockaddr in await loop.getaddrinfo(host, None):
                    found.setdefault(plain_address(str(sockaddr[0])), name)
    return found


@dataclass
class _Source:
    window_start: float
    suppressed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


class HandshakeWatch:
    def __init__(
        self, stats: RelayStats, cameras: Mapping[str, str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stats = stats
        self._cameras = dict(cameras)
        self._clock = clock
        # Oldest window first, so expired windows are found at the front.
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def failed(self, source: str, exc: BaseException) -> str:
        reason = reason_of(exc)
        source = plain_address(source)
        device = self._cameras.get(source, "")
        self._stats.tls_handshake_failures[(reason, device)] += 1
        if device:
            now = time.time()
            trouble = self._stats.tls_trouble.get(device)
            if trouble is None or trouble.reason != reason:
                trouble = self._stats.tls_trouble[device] = HandshakeTrouble(reason, since=now, last_at=now)
            trouble.last_at = now
            trouble.count += 1
        entry = self._sources.get(source)
        if entry is not None:
            entry.suppressed += 1
            entry.reasons[reason] += 1
            return reason
        if len(self._sources) >= MAX_SOURCES:
            self._summarise(*self._sources.popitem(last=False))
        self._sources[source] = _Source(self._clock())
        named = {"camera": device} if device else {}
        log.warning(
            "tls_handshake_failed",
            source=source,
            reason=reason,
            **named,
            error=str(exc) or type(exc).__name__,
            fix=FIXES[reason],
            next_summary_in_s=SUMMARY_EVERY_S,
        )
        return reason

    def succeeded(self, source: str) -> None:
        device = self._cameras.get(plain_address(source))
        if device and self._stats.tls_trouble.pop(device, None) is not None:
            log.info("tls_handshake_recovered", camera=device, source=plain_address(source))

    def flush(self) -> None:
        """Summary lines for the sources whose window ended; called about every second."""
        now = self._clock()
        while self._sources:
            source, entry = next(iter(self._sources.items()))
            if now - entry.window_start < SUMMARY_EVERY_S:
                break
            del self._sources[source]
            if entry.suppressed:
                self._summarise(source, entry)
                # Failures go on: the next summary comes a window later, not a line at once.
                self._sources[source] = _Source(now)
        cutoff = time.time() - TROUBLE_FORGET_S
        for device in [d for d, t in self._stats.tls_trouble.items() if t.last_at < cutoff]:
            del self._stats.tls_trouble[device]

    def _summarise(self, source: str, entry: _Source) -> None:
        if not entry.suppressed:
            return
        device = self._cameras.get(source, "")
        log.warning(
            "tls_handshake_failures_summary",
            source=source,
            **({"camera": device} if device else {}),
            count=entry.suppressed,
            reasons=dict(entry.reasons),
            window_s=SUMMARY_EVERY_S,
        )


def trouble_message(device: str, trouble: HandshakeTrouble) -> str:
    return f"{device} {SAYS.get(trouble.reason, SAYS['other'])} ({trouble.count} failed handshake(s))"
