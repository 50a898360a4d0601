"""upload.json, typed: UploadProgress reads the files relays have written all along (the
exact shapes below, each written by the relay before the type existed) and writes them
back unchanged, so a relay upgraded in the middle of an upload resumes it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.spool.progress import Part, UploadProgress
from relay.spool.store import SpoolStore

# As the relay wrote them before UploadProgress: the intent (before the create), after
# the create and two parts, set aside after a 409, and one from before stores were named.
INTENT = {
    "via": "s3",
    "key": "cam/2026/12/02/a.mkv",
    "part_size": 8388608,
    "parts": {},
    "intent_at": "2026-12-02T11:41:15.123456+00:00",
}
TWO_PARTS = {
    "via": "handoff",
    "key": "cam/2026/12/02/a.mkv",
    "part_size": 5242880,
    "parts": {"1": {"etag": '"e1"', "crc32c": "AAAAAA=="}, "2": {"etag": '"e2"', "crc32c": "BBBBBB=="}},
    "upload_id": "up-2",
    "superseded": ["up-1"],
}
ASIDE = {"via": "s3", "key": "cam/2026/12/02/a.mkv", "superseded": ["up-1", "up-2"]}
UNNAMED_STORE = {"key": "cam/a.mkv", "part_size": 5242880, "parts": {}, "upload_id": "up-3"}


@pytest.mark.parametrize("written", [INTENT, TWO_PARTS, ASIDE], ids=["intent", "two-parts", "aside"])
def test_old_files_read_and_write_back_unchanged(written: dict[str, object]) -> None:
    progress = UploadProgress.from_json(json.loads(json.dumps(written)))
    assert progress is not None
    assert progress.to_json() == written


def test_the_fields_are_typed() -> None:
    intent = UploadProgress.from_json(INTENT)
    assert intent is not None
    assert intent.intent_at == datetime(2026, 12, 2, 11, 41, 15, 123456, tzinfo=UTC)
    with pytest.raises(ValueError, match="no multipart upload was started"):
        intent.started()
    two = UploadProgress.from_json(TWO_PARTS)
    assert two is not None
    assert two.started() == ("up-2", 5242880)
    assert two.parts_by_number() == {1: Part(1, '"e1"', "AAAAAA=="), 2: Part(2, '"e2"', "BBBBBB==")}
    assert two.superseded == ("up-1",)
    unnamed = UploadProgress.from_json(UNNAMED_STORE)
    assert unnamed is not None
    assert unnamed.via == "s3"  # before stores were named, only S3 wrote these


def test_a_torn_or_foreign_file_is_no_progress(tmp_path: Path) -> None:
    store = SpoolStore(tmp_path)
    (tmp_path / "queue" / "clip-1").mkdir(parents=True)
    for text in ('{"key": "k", "parts": {"1": {"etag": 1}}', '["not", "progress"]', '{"part_size": 5}'):
        (tmp_path / "queue" / "clip-1" / "upload.json").write_text(text)
        assert store.load_upload_state("clip-1") is None
    store.save_upload_state("clip-1", UploadProgress.from_json(TWO_PARTS))
    assert store.load_upload_state("clip-1") == UploadProgress.from_json(TWO_PARTS)
    assert store.upload_ids_in_use(but="another-clip") == {"up-2"}
