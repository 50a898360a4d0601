"""`axis-relay s3 check`: prove the credentials and the bucket work, before the first clip.

Each step is a call the relay makes when it uploads, done once on a small probe object
under a prefix of its own, and a refusal names the permission that is missing. The
probe is deleted afterwards if the credentials may (the relay itself never deletes).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import crc32c
from botocore.exceptions import BotoCoreError, ClientError

from relay.config import RelayConfig
from relay.ops.checks import CheckReport
from relay.spool.clip import crc32c_b64
from relay.upload.failures import FIXES, error_code, http_status
from relay.upload.s3 import open_client

PROBE_PREFIX = "axis-relay-check/"


def _refusal(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        message = str(exc.response.get("Error", {}).get("Message", ""))
        return f"{error_code(exc)} (HTTP {http_status(exc)}){': ' + message if message else ''}"
    return f"{type(exc).__name__}: {exc}"


async def _step(report: CheckReport, what: str, call: Callable[[], Awaitable[Any]], permission: str) -> Any:
    """One call; on refusal the report says which permission it needs. None if it failed."""
    try:
        answer = await call()
    except (ClientError, BotoCoreError, OSError) as exc:
        fix = f"; it needs {permission}" if permission else ""
        kms = " and kms:GenerateDataKey / kms:Decrypt on the bucket's KMS key" if "kms" in str(exc).lower() else ""
        report.fail(f"FAIL {what}: {_refusal(exc)}{fix}{kms}")
        return None
    report.say(f"ok   {what}")
    return answer if answer is not None else True


async def check(config: RelayConfig, prefix: str = PROBE_PREFIX) -> CheckReport:
    report = CheckReport(verified=True)
    s3 = config.s3
    if s3 is None:
        report.fail("no [s3] section in the config: there is no bucket to check")
        return report
    async with open_client(s3) as (client, has_credentials):
        if not has_credentials:
            report.fail(
                "FAIL credentials: none found (s3.access_key_id/secret_access_key, the environment, AWS's chain)"
            )
            return report
        bucket = s3.bucket
        await _bucket(report, client, bucket, s3.region)
        if not report.verified:
            return report
        await _missing_key(report, client, bucket, f"{prefix}missing-{os.urandom(6).hex()}")
        await _probe_object(report, client, bucket, f"{prefix}probe-{os.urandom(6).hex()}.txt")
        await _multipart(report, client, bucket, f"{prefix}probe-{os.urandom(6).hex()}.mkv")
    return report


async def _bucket(report: CheckReport, client: Any, bucket: str, region: str) -> None:
    try:
        answer = await client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        status = http_status(exc)
        actual = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        if status == 404:
            report.fail(f"FAIL bucket {bucket}: it does not exist; create it or correct s3.bucket")
        elif status == 301 or (actual and actual != region):
            report.fail(f'FAIL bucket {bucket}: it is in {actual or "another region"}; set s3.region = "{actual}"')
        elif status == 403 and (refused := await _credentials_refused(client, bucket)):
            report.fail(f"FAIL credentials: S3 does not accept them ({refused}); {FIXES[refused]}")
        else:
            report.fail(f"FAIL bucket {bucket}: {_refusal(exc)}; the credentials need s3:ListBucket on it")
        return
    except (BotoCoreError, OSError) as exc:
        report.fail(f"FAIL bucket {bucket}: {_refusal(exc)}; check s3.endpoint_url, s3.ca_bundle and the network")
        return
    actual = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
    if actual and actual != region:
        report.fail(f'FAIL bucket {bucket}: it is in {actual}, s3.region says {region}; set s3.region = "{actual}"')
        return
    report.say(f"ok   bucket {bucket} exists{f' in {actual}' if actual else ''}")


async def _credentials_refused(client: Any, bucket: str) -> str | None:
    """After a bare 403 to HeadBucket (a HEAD has no error body): is it the credentials
    themselves? A GET of a key that cannot exist answers with the code: a wrong key id
    or secret says so, where a missing permission says AccessDenied."""
    try:
        await client.get_object(Bucket=bucket, Key=f"{PROBE_PREFIX}credentials-{os.urandom(6).hex()}")
    except ClientError as exc:
        code = error_code(exc)
        return code if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch") else None
    except (BotoCoreError, OSError):
        return None
    return None


async def _missing_key(report: CheckReport, client: Any, bucket: str, key: str) -> None:
    """A key that does not exist must answer 404: the relay tells its own clip from
    other content, and an expired upload from a refused one, by it."""
    try:
        await client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if http_status(exc) == 404:
            report.say("ok   HeadObject on a missing key answers 404")
            return
        hint = "s3:ListBucket on the bucket (without it a missing key answers 403)" if http_status(exc) == 403 else ""
        report.fail(f"FAIL HeadObject on a missing key: {_refusal(exc)}; it needs {hint or 's3:GetObject'}")
        return
    except (BotoCoreError, OSError) as exc:
        report.fail(f"FAIL HeadObject on a missing key: {_refusal(exc)}")
        return
    report.fail(f"FAIL HeadObject on a missing key: {key} exists")


async def _probe_object(report: CheckReport, client: Any, bucket: str, key: str) -> None:
    body = b"axis-relay preflight probe\n"
    checksum = crc32c_b64(crc32c.crc32c(body))

    async def put() -> Any:
        return await client.put_object(Bucket=bucket, Key=key, Body=body, ChecksumCRC32C=checksum, IfNoneMatch="*")

    if not await _step(report, f"conditional PutObject of {key} with its CRC32C", put, "s3:PutObject"):
        return

    async def head() -> Any:
        return await client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")

    await _step(report, "HeadObject with checksums", head, "s3:GetObject")
    try:
        await client.delete_object(Bucket=bucket, Key=key)
        report.say(f"ok   probe {key} deleted")
    except ClientError as exc:
        report.say(f"note probe {key} stays ({error_code(exc)}: no s3:DeleteObject, which the relay never needs)")


async def _multipart(report: CheckReport, client: Any, bucket: str, key: str) -> None:
    created = await _step(
        report,
        "CreateMultipartUpload with full-object CRC32C",
        lambda: client.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32C", ChecksumType="FULL_OBJECT"
        ),
        "s3:PutObject",
    )
    if not created:
        return
    upload_id = created["UploadId"]
    await _step(
        report,
        "ListParts (resuming after a restart)",
        lambda: client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id),
        "s3:ListMultipartUploadParts",
    )
    await _step(
        report,
        "ListMultipartUploads (finding an upload a crash left open)",
        lambda: client.list_multipart_uploads(Bucket=bucket, Prefix=key),
        "s3:ListBucketMultipartUploads on the bucket",
    )
    await _step(
        report,
        "AbortMultipartUpload (a clip given up leaves no parts behind)",
        lambda: client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id),
        "s3:AbortMultipartUpload",
    )
