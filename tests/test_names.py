"""File names from devices become safe single path components."""

from __future__ import annotations

import pytest

from relay.spool.clip import MAX_FILENAME_BYTES, safe_filename


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("video23-04-13_21-50-27-63_00001.mkv", "video23-04-13_21-50-27-63_00001.mkv"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\evil.mkv", "evil.mkv"),
        ("clip\x00.mkv", "clip_.mkv"),
        ("a..b...mkv", "a.b.mkv"),
        ("..", "fallback.mkv"),
        ("", "fallback.mkv"),
        (None, "fallback.mkv"),
        ("  spaced name .mkv", "spaced_name_.mkv"),
        # Any script stays readable (was "cam_ra-1.mkv", "mkv" and "lip.mkv").
        ("caméra-1.mkv", "caméra-1.mkv"),
        ("видео.mkv", "видео.mkv"),
        ("\u0441lip.mkv", "\u0441lip.mkv"),  # a Cyrillic es first, kept (was "lip.mkv")
        ("\uff56\uff49\uff44\uff45\uff4f.mkv", "video.mkv"),  # fullwidth letters, folded by NFKC
    ],
)
def test_safe_filename(given: str | None, expected: str) -> None:
    assert safe_filename(given, "fallback") == expected


def test_long_names_are_bounded_and_keep_their_extension() -> None:
    name = safe_filename("x" * 1000 + ".mkv", "fallback")
    assert len(name.encode()) <= MAX_FILENAME_BYTES
    assert name.endswith(".mkv")


def test_long_names_in_any_script_are_bounded_in_bytes() -> None:
    name = safe_filename("видео" * 100 + ".mkv", "fallback")
    assert len(name.encode()) <= MAX_FILENAME_BYTES
    assert name.endswith(".mkv")
    assert name.startswith("видео")
