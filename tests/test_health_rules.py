"""The millisecond layer under tests/test_health.py and tests/test_commissioning.py: the
handshake log's rate limit on a fake clock, how a failure's kind is read, durations in
one form, and the page without back-fill. No sockets."""

from __future__ import annotations

import ssl

import structlog

from relay.ingest import handshakes
from relay.ingest.handshakes import HandshakeWatch, reason_of
from relay.ops.health import Health, human_duration
from relay.ops.stats import RelayStats
from relay.ops.status import PageFacts, page


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ssl_error(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] ...")
    error.reason = reason
    return error


def test_a_source_gets_one_line_at_once_then_one_summary_per_window() -> None:
    stats, clock = RelayStats(), Clock()
    watch = HandshakeWatch(stats, {"192.0.2.20": "cam-yard"}, clock=clock)
    with structlog.testing.capture_logs() as logs:
        for _ in range(500):
            watch.failed("::ffff:192.0.2.20", _ssl_error("TLSV1_ALERT_UNKNOWN_CA"))
        watch.flush()  # the window has not ended: nothing more
        clock.now += handshakes.SUMMARY_EVERY_S
        watch.flush()
        watch.failed("192.0.2.20", _ssl_error("HTTP_REQUEST"))
        clock.now += handshakes.SUMMARY_EVERY_S
        watch.flush()
        clock.now += handshakes.SUMMARY_EVERY_S
        watch.flush()  # quiet for a window: no line, and the source is forgotten
    events = [(e["event"], e.get("count")) for e in logs]
    assert events == [
        ("tls_handshake_failed", None),
        ("tls_handshake_failures_summary", 499),
        ("tls_handshake_failures_summary", 1),
    ]
    assert logs[0]["camera"] == "cam-yard"
    assert stats.tls_handshake_failures[("unknown_ca", "cam-yard")] == 500
    assert stats.tls_handshake_failures[("plain_http", "cam-yard")] == 1
    assert watch._sources == {}


def test_the_table_of_sources_is_bounded() -> None:
    stats, clock = RelayStats(), Clock()
    watch = HandshakeWatch(stats, {}, clock=clock)
    with structlog.testing.capture_logs():
        for n in range(handshakes.MAX_SOURCES + 100):
            watch.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", ConnectionResetError())
    assert len(watch._sources) == handshakes.MAX_SOURCES
    assert stats.tls_handshake_failures[("closed", "")] == handshakes.MAX_SOURCES + 100


def test_failure_kinds() -> None:
    assert reason_of(_ssl_error("TLSV1_ALERT_UNKNOWN_CA")) == "unknown_ca"
    assert reason_of(_ssl_error("SSLV3_ALERT_CERTIFICATE_UNKNOWN")) == "unknown_ca"
    assert reason_of(_ssl_error("UNSUPPORTED_PROTOCOL")) == "protocol_version"
    assert reason_of(_ssl_error("HTTP_REQUEST")) == "plain_http"
    assert reason_of(_ssl_error("WRONG_VERSION_NUMBER")) == "not_tls"
    assert reason_of(_ssl_error("SOMETHING_NEW")) == "other"
    assert reason_of(ConnectionAbortedError("SSL handshake is taking longer than 1 seconds")) == "timeout"
    assert reason_of(ConnectionResetError()) == "closed"


def test_durations_read_one_way() -> None:
    assert [human_duration(s) for s in (0, 26, 89, 90, 180, 3600, 3660, 86400, 90000)] == [
        "0 s",
        "26 s",
        "89 s",
        "2 min",
        "3 min",
        "1 h",
        "1 h 1 min",
        "1 d",
        "1 d 1 h",
    ]


def test_the_page_hides_gaps_where_backfill_is_off() -> None:
    facts: dict[str, object] = {"free_disk_bytes": 10**9, "queued_clips": 0, "clips_uploaded": 0}
    for backfill in (True, False):
        text = page(
            PageFacts("1.2.3", "s3://b", ["cam-a"], Health("ok", ()), facts, RelayStats(), {}, backfill),
        )
        assert ("<th>gaps</th>" in text) is backfill
        assert ("data-field='gaps'" in text) is backfill
        assert "data-field='tls'" in text
        assert "never since start" in text
