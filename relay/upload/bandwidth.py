"""A token bucket shared by all upload workers, so the site's uplink keeps room for
everything else (the cameras' live view, the VPN, the office)."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, bytes_per_s: float, burst_bytes: float) -> None:
        self._rate = bytes_per_s
        self._burst = burst_bytes
        # Start empty: the limit holds from the first byte, not after a free burst.
        self._tokens = 0.0
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()  # waiters are served in order

    async def take(self, n: int) -> None:
        """Wait until ``n`` bytes may be sent. A request larger than the burst runs the
        bucket into debt, which later callers wait out, so the average rate holds."""
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self._rate)


class Unlimited:
    async def take(self, n: int) -> None:
        return None
