"""What the relay and the cloud function (cloud/function/handler.py) must agree on.

The function is deployed alone and cannot import the relay, so each shared fact is
written twice; these tests fail the moment the two copies differ.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from cloud.function import handler
from relay.spool.clip import CLIP_ID_TIME, ClipMeta, clip_id_time, new_clip_id
from relay.upload.delivery import disambiguated
from relay.upload.handoff import HandoffStore
from relay.upload.metadata import object_metadata


def a_clip(**fields: Any) -> ClipMeta:
    """A clip with every field objects carry (the footage's span and sources, a #s)."""
    now = datetime.now(UTC)
    given: dict[str, Any] = dict(
        clip_id=new_clip_id(now),
        camera="cam-entrance",
        filename="video23-04-13_21-50-27-63_00001.mkv",
        content_type="video/x-matroska",
        size=1234,
        crc32c="AAAAAA==",
        received_at=now.isoformat(),
        starts_at=(now - timedelta(seconds=15)).isoformat(),
        ends_at=now.isoformat(),
        starts_source="matroska",
        ends_source="arrival",
    )
    return ClipMeta(**(given | fields))


def test_clip_ids_have_one_form_on_both_sides() -> None:
    assert handler.CLIP_ID_TIME == CLIP_ID_TIME
    relay_id = new_clip_id(datetime.now(UTC))
    assert handler.CLIP_ID.fullmatch(relay_id)
    cloud_id = handler.new_clip_id()
    assert handler.CLIP_ID.fullmatch(cloud_id)
    # The relay reads the arrival time back out of either.
    assert abs(clip_id_time(cloud_id) - datetime.now(UTC)) < timedelta(minutes=1)
    assert len(cloud_id) == len(relay_id)


def test_a_clash_keeps_both_under_the_same_name() -> None:
    clip_id = new_clip_id(datetime.now(UTC))
    for key in ("cam/clip.mkv", "cam/2026/11/28/clip", "cam/a.b.mkv"):
        assert handler.disambiguated(key, clip_id) == disambiguated(key, clip_id)


@pytest.mark.parametrize(
    "meta",
    [
        a_clip(),
        a_clip(filename="clip.mkv", starts_at=None, ends_at=None, starts_source=None, ends_source=None),
        a_clip(origin="backfill", starts_source="export", ends_source="export"),
    ],
    ids=["every-field", "no-times-no-sequence", "backfill"],
)
def test_object_metadata_has_the_same_names_and_values_on_both_paths(meta: ClipMeta) -> None:
    assert set(object_metadata(meta)) <= set(handler.METADATA_KEYS)
    assert tuple(object_metadata(a_clip())) == handler.METADATA_KEYS
    # The hand-off: what the relay asks for is what the function signs into the URL.
    client = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="https://s3.example.invalid",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
    )
    function = handler.ClipBucket(client, "clips")
    request = {"action": "put", **HandoffStore._object_fields(meta, f"{meta.camera}/{meta.filename}")}
    answer = function.handle({"httpMethod": "POST", "body": json.dumps(request)})
    assert answer["statusCode"] == 200, answer["body"]
    headers = json.loads(answer["body"])["headers"]
    signed = {k.removeprefix("x-amz-meta-"): v for k, v in headers.items() if k.startswith("x-amz-meta-")}
    assert signed == object_metadata(meta)


def test_file_names_the_relay_keeps_are_keys_the_function_accepts() -> None:
    from relay.spool.clip import safe_filename

    for given in ("video23-04-13_21-50-27-63_00001.mkv", "видео.mkv", "caméra 1.mkv", "x~y.mkv", "a" * 300):
        name = safe_filename(given, "fallback")
        assert handler.SEGMENT.fullmatch(name), name
