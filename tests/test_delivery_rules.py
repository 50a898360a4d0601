"""The upload rules (relay.upload.delivery) against an object store in memory: each in
milliseconds, beside the acceptance tests that drive the same rules against the test S3
and the API Gateway stand-in. The spool is real (files on disk, written by ClipWriter)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.spool.clip import ClipMeta
from relay.spool.progress import UploadProgress
from relay.spool.store import SpoolStore
from relay.spool.writer import ClipWriter, WriteThreads
from relay.upload.bandwidth import Unlimited
from relay.upload.delivery import Delivered, ObjectDelivery
from relay.upload.failures import CommitConflict, PermanentUploadError
from tests.support.memory_store import LostAnswer, MemoryStore, StoredBytes, Upload

KEY = "cam/clip.mkv"
PART = 1024


@dataclasses.dataclass
class Rig:
    spool: SpoolStore
    store: MemoryStore
    delivery: ObjectDelivery

    async def clip(self, data: bytes, clip_id: str = "clip-1") -> ClipMeta:
        fields = dict(
            camera="cam",
            filename="clip.mkv",
            content_type="video/x-matroska",
            received_at="2026-12-02T10:00:00+00:00",
            query={},
            source="192.0.2.10",
            origin="device",
        )
        async with WriteThreads.running() as writes:
            writer = ClipWriter(self.spool, writes, clip_id, fields, lambda _: None)
            try:
                await writer.write(data)
                return await writer.commit()
            finally:
                await writer.close()

    def progress(self, clip_id: str = "clip-1") -> UploadProgress | None:
        return self.spool.load_upload_state(clip_id)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    spool = SpoolStore(tmp_path / "spool")
    spool.prepare()
    store = MemoryStore()
    # Multipart from 4 KiB, in 1 KiB parts: a 5 KiB clip is five parts.
    delivery = ObjectDelivery(store, spool, multipart_threshold_bytes=4 * PART, part_size_bytes=PART, limit=Unlimited())
    return Rig(spool, store, delivery)


async def fails(action: Callable[[], Awaitable[object]], error: type[BaseException] = LostAnswer) -> None:
    with pytest.raises(error):
        await action()


async def test_a_put_whose_answer_was_lost_is_recognised_on_retry_not_stored_twice(rig: Rig) -> None:
    data = os.urandom(2 * PART)
    meta = await rig.clip(data)
    rig.store.fail_next("put", "after")
    await fails(lambda: rig.delivery.deliver(meta, KEY))
    assert await rig.delivery.deliver(meta, KEY) == Delivered(KEY, already_present=True)
    assert rig.store.objects == {KEY: StoredBytes(data, meta.clip_id)}


async def test_a_key_holding_other_content_keeps_both(rig: Rig) -> None:
    rig.store.objects[KEY] = StoredBytes(b"someone else's", None)
    data = os.urandom(PART)
    meta = await rig.clip(data)
    delivered = await rig.delivery.deliver(meta, KEY)
    assert delivered.key == f"cam/clip~{meta.clip_id}.mkv"
    assert rig.store.objects[KEY].data == b"someone else's"
    assert rig.store.objects[delivered.key].data == data


async def test_the_same_bytes_under_the_key_from_another_clip_are_this_clip(rig: Rig) -> None:
    """A clip whose metadata was lost (another clip id) but whose bytes match: the same
    footage, not a second copy."""
    data = os.urandom(PART)
    rig.store.objects[KEY] = StoredBytes(data, "an-older-id")
    meta = await rig.clip(data)
    assert await rig.delivery.deliver(meta, KEY) == Delivered(KEY, already_present=True)
    assert list(rig.store.objects) == [KEY]


async def test_parts_recorded_before_a_stop_are_not_sent_again(rig: Rig) -> None:
    data = os.urandom(5 * PART)
    meta = await rig.clip(data)
    rig.store.fail_next("upload_part", after_calls=3)  # three parts go, then the line drops
    await fails(lambda: rig.delivery.deliver(meta, KEY))
    progress = rig.progress()
    assert progress is not None
    assert sorted(progress.parts_by_number()) == [1, 2, 3]
    rig.store.calls.clear()
    assert await rig.delivery.deliver(meta, KEY) == Delivered(KEY)
    assert rig.store.calls["upload_part"] == 2  # parts 4 and 5 only
    assert rig.store.calls["create_multipart"] == 0  # the same upload all along
    assert rig.store.objects[KEY].data == data


async def test_a_part_whose_answer_was_lost_is_sent_again_and_the_object_is_whole(rig: Rig) -> None:
    """S3 holds the part, the relay never heard its ETag: it is not recorded, so it goes
    again (the newer copy replaces the older under the same part number)."""
    data = os.urandom(5 * PART)
    meta = await rig.clip(data)
    rig.store.fail_next("upload_part", "after", after_calls=1)
    await fails(lambda: rig.delivery.deliver(meta, KEY))
    progress = rig.progress()
    assert progress is not None
    assert sorted(progress.parts_by_number()) == [1]
    rig.store.calls.clear()
    assert await rig.delivery.deliver(meta, KEY) == Delivered(KEY)
    assert rig.store.calls["upload_part"] == 4
    assert rig.store.objects[KEY].data == data


async def test_a_part_the_store_lost_is_sent_again(rig: Rig) -> None:
    data = os.urandom(5 * PART)
    meta = await rig.clip(data)
    rig.store.fail_next("complete")
    await fails(lambda: rig.delivery.deliver(meta, KEY))
    [upload] = rig.store.uploads.values()
    del upload.parts[2]  # the store no longer holds part 2 (as ListParts would show)
    rig.store.calls.clear()
    assert await rig.delivery.deliver(meta, KEY) == Delivered(KEY)
    assert rig.store.calls["upload_part"] == 1
    assert rig.store.objects[KEY].data == data


async def test_after_a_crash_after_create_the_newest_free_upload_is_adopted_and_only_orphans_aborted(
    rig: Rig,
) -> None:
    data = os.urandom(5 * PART)
    meta = await rig.clip(data)
    other = await rig.clip(os.urandom(5 * PART), clip_id="clip-2")
    # Another clip of this spool, with the same key, is uploading: its upload is held.
    rig.store.uploads["held"] = Upload(KEY, other.clip_id, datetime.now(UTC))
    rig.spool.save_upload_state(other.clip_id, UploadProgress(KEY, "s3", part_size=PART, upload_id="held"))
    # An upload from long before this clip's intent: an orphan of some earlier crash.
    rig.store.uploads["stale"] = Upload(KEY, "gone", datetime.now(UTC) - timedelta(hours=2))
    rig.store.fail_next("create_multipart", "after")  # created; the answer never came
    await fails(lambda: rig.delivery.deliver(meta, KEY))
    intent = rig.progress()
    assert intent is not None
    assert intent.upload_id is None
    assert intent.intent_at is not None
    [created] = set(rig.store.uploads) - {"held", "stale"}
    rig.store.calls.clear()
    assert await rig.delivery.deliver(meta, KEY) == Delivered(KEY)
    assert rig.store.calls["create_multipart"] == 0  # adopted, not created again
    assert rig.store.objects[KEY].data == data
    assert rig.store.completed == [created]  # the one this clip's crash left, adopted
    assert set(rig.store.uploads) == {"held"}  # "stale" aborted; another clip's kept


async def test_a_409_on_completion_starts_a_new_upload_and_aborts_the_old_one_after(rig: Rig) -> None:
    data = os.urandom(5 * PART)
    meta = await rig.clip(data)
    rig.store.fail_next("complete", "conflict")
    await fails(lambda: rig.delivery.deliver(meta, KEY), CommitConflict)
    [first] = rig.store.uploads
    aside = rig.progress()
    assert aside is not None
    assert aside.superseded == (first,)
    assert aside.upload_id is None
    rig.store.calls.clear()
    assert await rig.delivery.deliver(meta, KEY) == Delivered(KEY)
    assert rig.store.calls["create_multipart"] == 1  # a new upload: AWS says every part again
    assert rig.store.calls["upload_part"] == 5
    assert rig.store.uploads == {}  # the one set aside was aborted once the clip was in
    assert rig.store.objects[KEY].data == data


async def test_a_completion_whose_answer_was_lost_is_recognised(rig: Rig) -> None:
    data = os.urandom(5 * PART)
    meta = await rig.clip(data)
    rig.store.fail_next("complete", "after")
    await fails(lambda: rig.delivery.deliver(meta, KEY))
    rig.store.calls.clear()
    assert (await rig.delivery.deliver(meta, KEY)).key == KEY
    assert rig.store.calls["create_multipart"] == rig.store.calls["upload_part"] == 0
    assert rig.store.objects == {KEY: StoredBytes(data, meta.clip_id)}
    assert rig.progress() is None


async def test_a_clip_damaged_on_disk_is_never_completed(rig: Rig) -> None:
    data = os.urandom(5 * PART)
    meta = await rig.clip(data)
    path = rig.spool.data_path(meta.clip_id)
    damaged = bytearray(path.read_bytes())
    damaged[3 * PART + 7] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(PermanentUploadError, match="no longer matches"):
        await rig.delivery.deliver(meta, KEY)
    assert rig.store.objects == {}
    assert rig.store.uploads == {}
