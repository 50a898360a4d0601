"""When a clip's footage starts and ends: from its Matroska header, else its file name,
else its arrival; the ledger says which (and the relay that sets it is the real one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.camera.digest import ChallengeError, DigestChallenge, choose
from relay.ledger import Ledger
from relay.spool.timing import clip_times, read_matroska_header
from relay.templates import FilenameTemplate
from tests.support.footage import clip_bytes
from tests.support.harness import PATH, RunningRelay, wait_until
from tests.support.vapix_camera import FILENAME_TEMPLATE, device_filename

# A few days ago, not a fixed date: a header time over 30 days from the arrival is not
# believed (relay.spool.timing.PLAUSIBLE), and a fixed date would fail the suite later.
START = (datetime.now(UTC) - timedelta(days=4)).replace(hour=8, minute=0, second=0, microsecond=300000)


def test_header_gives_start_and_duration_reading_only_the_front(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    data = clip_bytes("cam", START, START + timedelta(seconds=15), frame_bytes=4000)
    path.write_bytes(data)
    header = read_matroska_header(path)
    assert header is not None
    assert header.date_utc == START
    assert header.duration == timedelta(seconds=15)
    # Only the header counts: the rest of the file may be cut or garbage.
    path.write_bytes(data[:200] + b"\xff" * 1000)
    assert read_matroska_header(path) == header


@pytest.mark.parametrize("junk", [b"", b"not matroska at all", b"\x1a\x45\xdf\xa3\x88" + b"\x00" * 50])
def test_no_header_is_no_time_not_a_failure(tmp_path: Path, junk: bytes) -> None:
    path = tmp_path / "clip.mkv"
    path.write_bytes(junk)
    assert read_matroska_header(path) is None


def test_file_name_time_in_its_zone_or_its_own_offset() -> None:
    template = FilenameTemplate(FILENAME_TEMPLATE)
    assert template.moment("video23-04-13_21-50-27-63_00001.mkv", "Europe/Stockholm") == datetime(
        2023, 4, 13, 19, 50, 27, 630000, tzinfo=UTC
    )
    with_offset = FilenameTemplate("cam_%Y%m%d_%H%M%S%z_#s.mkv")
    assert with_offset.moment("cam_20261128_090000+0100_00042.mkv", "America/New_York") == datetime(
        2026, 11, 28, 8, 0, tzinfo=UTC
    )
    assert template.moment("something-else.mkv", "UTC") is None
    assert template.moment("video23-13-45_21-50-27-63_00001.mkv", "UTC") is None  # month 13
    with pytest.raises(ValueError, match="whole time stamp"):
        FilenameTemplate("video_#s.mkv")


def test_the_best_source_wins(tmp_path: Path) -> None:
    arrival = START + timedelta(seconds=16)
    named = device_filename(START, 7)
    template = FilenameTemplate(FILENAME_TEMPLATE)
    full, bare, none = tmp_path / "full.mkv", tmp_path / "bare.mkv", tmp_path / "none.mkv"
    full.write_bytes(clip_bytes("cam", START, START + timedelta(seconds=15)))
    bare.write_bytes(clip_bytes("cam", START, START + timedelta(seconds=15), duration=False, date=False))
    none.write_bytes(b"raw")
    a = clip_times(full, "x.mkv", arrival, None, "UTC")
    assert (a.starts_at, a.ends_at, a.starts_source, a.ends_source) == (
        START,
        START + timedelta(seconds=15),
        "matroska",
        "matroska",
    )
    b = clip_times(bare, named, arrival, template, "UTC")
    assert (b.starts_at, b.ends_at, b.starts_source, b.ends_source) == (START, arrival, "filename", "arrival")
    c = clip_times(none, "x.mkv", arrival, template, "UTC")
    assert (c.starts_at, c.ends_at, c.starts_source) == (arrival, arrival, "arrival")


async def test_the_ledger_records_each_clips_span_and_its_source(relay: RunningRelay) -> None:
    clip = clip_bytes("cam-entrance", START, START + timedelta(seconds=15))
    assert (await relay.device.post_clip(PATH, clip, filename="any.mkv")).status == 200
    assert (await relay.device.post_clip(PATH, b"not a clip", filename="other.mkv")).status == 200

    def rows() -> list[tuple[str | None, str | None, str | None, str | None]]:
        ledger = Ledger.open_readonly(relay.config.ledger_path)
        try:
            return [(r.starts_at, r.ends_at, r.starts_source, r.ends_source) for r in ledger.clips.find()]
        finally:
            ledger.close()

    await wait_until(lambda: len(rows()) == 2, what="two clips in the ledger")
    first, second = rows()
    ledger = "%Y-%m-%dT%H:%M:%S.%fZ"
    ends = START + timedelta(seconds=15)
    assert first == (f"{START:{ledger}}", f"{ends:{ledger}}", "matroska", "matroska")
    assert second[2:] == ("arrival", "arrival")


def test_digest_challenges_as_devices_send_them() -> None:
    chosen = choose(
        [
            'Digest realm="AXIS_ACCC8EB3494E", nonce="abc", algorithm=MD5, qop="auth"',
            'Digest realm="AXIS_ACCC8EB3494E", nonce="def", algorithm=SHA-256, qop="auth", stale=true',
            'Basic realm="AXIS_ACCC8EB3494E"',
        ]
    )
    assert isinstance(chosen, DigestChallenge)
    assert (chosen.algorithm, chosen.nonce, chosen.stale) == ("SHA-256", "def", True)
    old = choose(['Digest realm="AXIS_X", nonce="n1"'])  # old firmware: no algorithm, no qop
    assert isinstance(old, DigestChallenge)
    assert (old.algorithm, old.qop) == ("MD5", None)
    assert choose(['Basic realm="x"']) == "basic"
    with pytest.raises(ChallengeError, match="cannot give"):
        choose(['Digest realm="x", nonce="n", qop="auth-int"'])
