"""Who may even try: source allow-lists, and a brake on guessing credentials."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_S = 60.0
MAX_TRACKED = 4096


def allowed_source(source: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(source or "")
    except ValueError:
        return False
    return any(address in network for network in networks)


class FailureLimiter:
    """At most ``per_minute`` failed authentications per source address in any minute;
    past that the address gets 429 without its credentials being checked at all.

    Beside it, a budget for all addresses together (``total_per_minute``): past it, an
    address that failed lately is not heard again for now, so guesses from many
    rotating addresses stop too, while an address that has not failed (a device that
    is configured right) is still checked and served."""

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, total_per_minute: int | None = None
    ) -> None:
        self._limit = per_minute
        self._total = total_per_minute
        self._clock = clock
        # Least recently failed first: expiry and eviction look only at the front, so a
        # failure costs the same with 10 addresses in the table as with 4,096.
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()

    def _recent(self, source: str, now: float) -> deque[float]:
        times = self._failures.get(source, deque())
        while times and now - times[0] > WINDOW_S:
            times.popleft()
        return times

    def blocked(self, source: str) -> bool:
        now = self._clock()
        times = self._recent(source, now)
        if not times:
            self._failures.pop(source, None)  # bounded: only sources that failed lately
            return False
        if len(times) >= self._limit:
            return True
        while self._all and now - self._all[0] > WINDOW_S:
            self._all.popleft()
        return self._total is not None and len(self._all) >= self._total

    def failed(self, source: str) -> None:
        now = self._clock()
        times = self._recent(source, now)
        times.append(now)
        self._failures[source] = times
        self._failures.move_to_end(source)
        self._all.append(now)
        if self._total is not None and len(self._all) > 2 * self._total:
            self._all.popleft()  # bounded: only the count inside the window matters
        # Many addresses failing once (a scan) must not grow memory without bound: the
        # front holds the addresses that failed longest ago; drop those that expired,
        # and past the bound the oldest even if not (it has failed least recently).
        while self._failures:
            oldest, oldest_times = next(iter(self._failures.items()))
            if len(self._failures) <= MAX_TRACKED and now - oldest_times[-1] <= WINDOW_S:
                break
            del self._failures[oldest]
