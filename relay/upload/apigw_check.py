"""`axis-relay apigw check`: prove that a clip POSTed through API Gateway arrives.

A 200 from the gateway proves little: the seed's published handler answers 200 with
``null`` and stores nothing. So one small test clip goes through ``apigw.url`` exactly
as a clip would, and then is looked for: where the answer says it went, else where the
seed's function puts a clip (``<camera>/<file>``, or ``default_folder/<file>`` when the
function does not see the camera). It is looked for through the hand-off's ``head``
(the reference function in cloud/), or with the ``[s3]`` section's credentials
(read access to the bucket the function writes to). A path that passed is remembered
in the spool directory, so the running relay does not warn about it.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import crc32c
from botocore.exceptions import BotoCoreError, ClientError

from relay.config import RelayConfig
from relay.ops.checks import CheckReport
from relay.spool.clip import ClipMeta, crc32c_b64, new_clip_id
from relay.upload.apigw import VERIFIED_FILE
from relay.upload.body import FileRange
from relay.upload.failures import EndpointError, PermanentUploadError
from relay.upload.gateway import Endpoint, HandoffUnavailable, PayloadRefused
from relay.upload.handoff import HandoffStore
from relay.upload.s3 import open_client

CHECK_FOLDER = "axis-relay-check"
SEED_DEFAULT_FOLDER = "default_folder"


def _record_verified(spool_dir: Path, url: str, key: str) -> None:
    spool_dir.mkdir(parents=True, exist_ok=True)
    record = {"url": url, "key": key, "at": datetime.now(UTC).isoformat()}
    (spool_dir / VERIFIED_FILE).write_text(json.dumps(record, indent=1))


def _test_clip() -> tuple[ClipMeta, bytes]:
    now = datetime.now(UTC)
    body = os.urandom(2048)
    clip_id = new_clip_id(now)
    meta = ClipMeta(
        clip_id=clip_id,
        camera=CHECK_FOLDER,
        filename=f"check-{clip_id}.mkv",
        content_type="video/x-matroska",
        size=len(body),
        crc32c=crc32c_b64(crc32c.crc32c(body)),
        received_at=now.isoformat(),
    )
    return meta, body


async def check(config: RelayConfig) -> CheckReport:
    report = CheckReport()
    apigw = config.apigw
    if apigw is None:
        report.say("no [apigw] section in the config: there is no API Gateway path to check")
        return report
    meta, body = _test_clip()
    with tempfile.TemporaryDirectory() as scratch:
        sent = Path(scratch) / meta.filename
        sent.write_bytes(body)
        async with Endpoint.open(apigw) as endpoint:
            return await _post_and_find(config, endpoint, meta, FileRange(sent, 0, len(body)), body, report)


async def _post_and_find(
    config: RelayConfig, endpoint: Endpoint, meta: ClipMeta, sent: FileRange, body: bytes, report: CheckReport
) -> CheckReport:
    assert config.apigw is not None
    apigw = config.apigw
    try:
        answer = await endpoint.post_clip(meta, sent)
    except (EndpointError, PayloadRefused, PermanentUploadError, OSError) as exc:
        report.say(f"POST {apigw.url}: failed: {exc}")
        return report
    except Exception as exc:  # aiohttp's errors, a TLS failure: say what it was
        report.say(f"POST {apigw.url}: failed: {type(exc).__name__}: {exc}")
        return report
    named = answer.get("key") if isinstance(answer.get("key"), str) else None
    report.say(f"POST {apigw.url}: 200; the answer {'names the key ' + named if named else 'names no key'}")
    candidates = [named] if named else [f"{meta.camera}/{meta.filename}", f"{SEED_DEFAULT_FOLDER}/{meta.filename}"]
    found = await _find(config, endpoint, candidates, meta, body, report)
    if found is None:
        return report
    if found.startswith(SEED_DEFAULT_FOLDER + "/"):
        report.say(
            f"the test clip arrived as {found}, not in its camera's folder: the function does not read the "
            "camera (subfolder) the relay sends; two cameras sending the same file name overwrite each other"
        )
        return report
    report.verified = True
    report.say(f"the test clip arrived, byte for byte, as {found}")
    try:
        _record_verified(config.spool.dir, apigw.url, found)
    except OSError as exc:
        report.say(f"(could not record the result in {config.spool.dir}: {exc.strerror})")
    return report


async def _find(
    config: RelayConfig, endpoint: Endpoint, keys: list[str], meta: ClipMeta, body: bytes, report: CheckReport
) -> str | None:
    assert config.apigw is not None
    if config.apigw.handoff_url:
        store = HandoffStore(endpoint)
        for key in keys:
            try:
                held = await store.head(key)
            except (EndpointError, HandoffUnavailable) as exc:
                report.say(f"the hand-off's head action failed for {key}: {exc}")
                break
            if held is not None and held.size == meta.size and held.crc32c == meta.crc32c:
                return key
        else:
            report.say(f"the hand-off's head action finds no such clip at {' or '.join(keys)}")
            return None
    if config.s3 is not None:
        return await _find_in_bucket(config, keys, body, report)
    report.say(
        "delivery could not be verified: the answer names no key the hand-off could look up, and there is "
        "no [s3] section with read access to the bucket the function writes to; add one (s3:GetObject is "
        "enough) or deploy the reference function in cloud/, then run this check again"
    )
    return None


async def _find_in_bucket(config: RelayConfig, keys: list[str], body: bytes, report: CheckReport) -> str | None:
    s3 = config.s3
    assert s3 is not None
    async with open_client(s3) as (client, _):
        for key in keys:
            try:
                answer = await client.get_object(Bucket=s3.bucket, Key=key)
                async with answer["Body"] as stream:
                    stored = await stream.read()
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in ("NoSuchKey", "404"):
                    continue
                report.say(f"reading s3://{s3.bucket}/{key} failed: {code}; grant s3:GetObject to check")
                return None
            except (BotoCoreError, OSError) as exc:
                report.say(f"reading s3://{s3.bucket}/{key} failed: {exc}")
                return None
            if stored == body:
                return key
            report.say(f"s3://{s3.bucket}/{key} exists but holds other bytes than the test clip")
            return None
    report.say(
        f"the test clip is nowhere in s3://{s3.bucket} ({' or '.join(keys)}): the endpoint answered 200 but "
        "stored nothing there. The seed's published lambda_handler.js does exactly this (its exported handler "
        "only logs the event): deploy the reference function in cloud/, or export its upload function"
    )
    return None
