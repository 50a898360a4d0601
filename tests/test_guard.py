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


def test_past_the_bound_the_least_recent_address_goes_even_within_the_minute() -> None:
    """The table stays at its bound during a scan, without a sweep over it per failure
    (the old sweep made each failure cost the whole table: 1.27 -> 6.16 ms)."""
    clock = Clock()
    limiter = FailureLimiter(per_minute=3, clock=clock)
    for n in range(guard.MAX_TRACKED + 100):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
        clock.now += 0.001  # all within the minute
    assert len(limiter._failures) == guard.MAX_TRACKED
    assert "10.0.0.0" not in limiter._failures  # the least recent went first
    assert f"10.0.{(guard.MAX_TRACKED + 99) // 256}.{(guard.MAX_TRACKED + 99) % 256}" in limiter._failures


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


class Transport:
    """Enough of a transport for the connection guard: it records being cut."""

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        raise AssertionError("close() keeps a TLS descriptor until the peer answers: the guard aborts")

    def abort(self) -> None:
        self.closed = True


class Handler:
    """Stands in for aiohttp's request handler: the guard only passes calls on."""

    def connection_made(self, transport: object) -> None: ...

    def connection_lost(self, exc: object) -> None: ...


def test_over_the_cap_the_oldest_idle_connection_goes_never_a_busy_one() -> None:
    from relay.ingest.connections import ConnectionGuard

    connections = ConnectionGuard(cap=2, head_timeout_s=10)
    make = connections.factory(Handler)
    first, second, third, fourth = (make() for _ in range(4))
    transports = [Transport() for _ in range(4)]
    first.connection_made(transports[0])  # type: ignore[arg-type]
    second.connection_made(transports[1])  # type: ignore[arg-type]
    with connections.request(transports[0]):  # type: ignore[arg-type]  # a device mid-upload on the oldest
        third.connection_made(transports[2])  # type: ignore[arg-type]
        assert [t.closed for t in transports[:3]] == [False, True, False]  # the oldest idle went
        second.connection_lost(None)
        with connections.request(transports[2]):  # type: ignore[arg-type]  # both held ones busy now
            fourth.connection_made(transports[3])  # type: ignore[arg-type]
            assert transports[3].closed  # the newcomer is turned away, nobody busy is cut
    assert not transports[0].closed
    assert connections.closed_idle == 2  # each cut connection counted once


def test_a_cut_connection_is_gone_at_once_and_never_cut_again() -> None:
    """The bug of round one: close() on a TLS connection left it held until the peer
    answered, so every newcomer "evicted" the same one and the cap did not hold."""
    from relay.ingest.connections import ConnectionGuard

    connections = ConnectionGuard(cap=4, head_timeout_s=10)
    make = connections.factory(Handler)
    transports = [Transport() for _ in range(12)]
    for transport in transports:
        make().connection_made(transport)  # type: ignore[arg-type]  # none ever answers or closes
    assert connections.open_connections == 4
    assert [t.closed for t in transports] == [True] * 8 + [False] * 4
    assert connections.closed_idle == 8
