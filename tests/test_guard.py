"""The failed-login brake: per address, for a minute, with bounded memory."""

from __future__ import annotations

from relay.ingest import guard
from relay.ingest.guard import FailureLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_scan_from_many_addresses_does_not_grow_without_bound() -> None:
    clock = Clock()
    limiter = FailureLimiter(per_minute=3, clock=clock)
    for n in range(guard.MAX_TRACKED):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
    clock.now += guard.WINDOW_S + 1  # a minute later, all of those have expired
    limiter.failed("192.0.2.1")
    assert len(limiter._failures) == 1


def test_blocks_after_the_limit_only_that_address_and_only_for_a_minute() -> None:
    clock = Clock()
    limiter = FailureLimiter(per_minute=2, clock=clock)
    limiter.failed("192.0.2.7")
    assert not limiter.blocked("192.0.2.7")
    limiter.failed("192.0.2.7")
    assert limiter.blocked("192.0.2.7")
    assert not limiter.blocked("192.0.2.8")
    clock.now += guard.WINDOW_S + 1
    assert not limiter.blocked("192.0.2.7")


def test_a_budget_for_all_addresses_stops_rotating_guessers_but_not_good_devices() -> None:
    clock = Clock()
    limiter = FailureLimiter(per_minute=10, clock=clock, total_per_minute=5)
    for n in range(5):  # five addresses, one wrong guess each: none at its own limit
        limiter.failed(f"10.0.0.{n}")
    assert limiter.blocked("10.0.0.0")  # past the budget, an address that failed waits
    assert not limiter.blocked("10.0.0.99")  # one that never failed (a good device) is served
    clock.now += guard.WINDOW_S + 1
    assert not limiter.blocked("10.0.0.0")
