"""This machine's addresses as devices on the LAN reach it: for the recipient URL that
`make run` prints and for the names of the certificate the installer makes."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct

# SIOCGIFADDR: an interface's IPv4 address (Linux).
_SIOCGIFADDR = 0x8915


def lan_addresses() -> list[str]:
    """This machine's addresses as the LAN sees them, read from its interfaces (not from
    the host name, which often resolves to 127.0.1.1): IPv4, then global IPv6."""
    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                packed = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
                address = socket.inet_ntoa(packed[20:24])
                if not address.startswith("127.") and address not in found:
                    found.append(address)
    with contextlib.suppress(OSError), open("/proc/net/if_inet6") as table:
        for line in table:
            raw, _, _, scope, *_ = line.split()
            if scope == "00":  # global scope
                address = str(ipaddress.IPv6Address(bytes.fromhex(raw)))
                if address not in found:
                    found.append(address)
    return found
