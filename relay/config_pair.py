"""The config of a site with two gateways: who this relay is (``[site]``) and how the
pair shares the work through S3 (``[ha]``; relay.pair)."""

from __future__ import annotations

import re
import socket
from typing import Annotated

from pydantic import Field, field_validator

from relay.config_base import Strict, base_url

# A relay id is one segment of the names `camera setup` gives (axis-relay:<relay>:<device>:...)
# and of S3 keys: no colon, no slash.
RELAY_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def host_relay_id() -> str:
    """The default relay id: the host name, cut to what an id may hold."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname().split(".")[0])[:64].lstrip("-_.")
    return name or "relay"


class SiteConfig(Strict):
    # Carried by every name `camera setup` creates, so that two relays set up on one camera
    # never replace each other's recipient, action, schedule or rule.
    relay_id: Annotated[str, Field(pattern=RELAY_ID)] = Field(default_factory=host_relay_id)
    # The other gateway of a pair, as cameras reach it (its ingest.public_url), e.g.
    # ["https://gw-b.local:8443"]; empty: this relay is the site's only one.
    peers: list[str] = Field(default_factory=list, max_length=1)

    @field_validator("peers")
    @classmethod
    def _peer_urls(cls, value: list[str]) -> list[str]:
        return [base_url(url, "the other relay's URL as cameras reach it", "gw-b.local:8443") for url in value]

    @property
    def paired(self) -> bool:
        return bool(self.peers)


class HaConfig(Strict):
    """Two gateways per site (relay.pair): S3's conditional writes are the coordination."""

    # The secondary of a camera's clips waits this long after a clip arrived, then looks
    # for the primary's copy in S3 before it uploads its own.
    peer_delay_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    # Health is degraded when the peer's heartbeat in S3 has not moved for this long.
    peer_silent_s: Annotated[float, Field(gt=0)] = 300.0
    # How often each relay writes its heartbeat object (and reads the peer's).
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # A camera's back-fill lease is held for one slot of this length at a time; when its
    # holder dies, the peer takes it over within one slot.
    lease_slot_s: Annotated[float, Field(ge=2, le=86400)] = 300.0
    # Where the leases and heartbeats live in the bucket: outside every clip key.
    prefix: str = "_axis-relay/"

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/", value):
            raise ValueError(f'{value!r} is not a key prefix; write one such as "_axis-relay/" (ending in /)')
        return value
