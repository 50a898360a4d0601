"""Which relay of a pair uploads a camera's clips first: its primary.

Rendezvous hashing over the relays' URLs (each relay's ingest.public_url, as the other
lists it in site.peers): both relays compute the same answer from their own configs, a
pair shares the cameras about evenly, and the answer for a camera never changes while
the two URLs stay the same. Two configs that disagree on a URL only cost uplink (both
upload first, or both wait), never a clip: S3's conditional commit settles either way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _weight(relay_url: str, device: str) -> bytes:
    return hashlib.sha256(f"{relay_url}\0{device}".encode()).digest()


def primary_of(device: str, relays: Sequence[str]) -> str:
    """The URL of the relay that uploads ``device``'s clips first."""
    return max(relays, key=lambda url: _weight(url, device))
