"""Which upload failures are worth waiting out, and which need an operator.

The rule that keeps clips safe: when in doubt, it is transient. A transient failure
costs a retry; a wrong "permanent" verdict moves a good clip out of the queue.
"""

from __future__ import annotations

import re

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError


class PermanentUploadError(Exception):
    """Retrying will not help; the clip goes to quarantine with this reason."""

    def __init__(self, reason: str, **detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# Codes that come with a 4xx status but pass by themselves: throttling, a clock
# not yet set by NTP (a Raspberry Pi has no RTC), expiring session credentials.
TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ExpiredToken",
        "TokenRefreshRequired",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "OperationAborted",
        "InternalError",
        "ServiceUnavailable",
        # A presigned URL used after it expired (a long outage mid-upload): the
        # hand-off asks for a fresh one on the next attempt.
        "RequestExpired",
    }
)

FIXES = {
    "AccessDenied": "grant the relay's credentials s3:PutObject (and multipart actions) on the bucket",
    "NoSuchBucket": "create the bucket or correct s3.bucket in the config",
    "InvalidAccessKeyId": "correct the AWS access key (config s3.access_key_id or the credential chain)",
    "SignatureDoesNotMatch": "correct the AWS secret key (config s3.secret_access_key or the credential chain)",
    "BadDigest": "the spooled clip no longer matches the checksum taken when it arrived (disk corruption?)",
    "PermanentRedirect": "set s3.region to the bucket's region",
    "AuthorizationHeaderMalformed": "set s3.region to the bucket's region",
    "KMS.AccessDenied": "the bucket is encrypted with SSE-KMS: grant the relay's credentials kms:GenerateDataKey "
    "and kms:Decrypt on its key (a multipart upload with checksums and a HeadObject with checksums need both)",
    "HeadForbidden": "grant the relay's credentials s3:ListBucket on the bucket: without it S3 answers 403, "
    "not 404, for a key that does not exist, and the relay cannot tell a missing key from a refused one",
}


class DestinationRefused(PermanentUploadError):
    """The destination refuses the relay itself (its credentials, its bucket, its API key),
    not this clip: every clip would fail alike. Delivery pauses, the clip stays queued,
    health turns failing with the fix, and the destination is tried again later."""


# Codes that mean "the relay as configured is refused", whatever the clip: a wrong key,
# a wrong secret, a missing bucket or permission, a wrong region. (AWS's own words; a
# KMS key refused and a 403 to HeadObject are raised as DestinationRefused where seen.)
DESTINATION_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "NoSuchBucket",
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "InvalidToken",
        "AllAccessDisabled",
        "AccountProblem",
    }
)


class CommitConflict(Exception):
    """S3 answered 409 ConditionalRequestConflict: a conditional write raced another
    operation on the key (a completion still in progress, say). Not committed, and
    not permanent: retried after a backoff, when the key's holder is checked again."""


class EndpointError(Exception):
    """An HTTP endpoint we talk to without botocore (API Gateway, a presigned S3 URL)
    answered with an error status; ``fix`` says what an operator can do about a 4xx."""

    def __init__(self, status: int, code: str, message: str, *, fix: str = "") -> None:
        super().__init__(f"{code} (HTTP {status}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fix = fix


def connection_lost(exc: BaseException) -> BaseException | None:
    """The error underneath, when a connection that was made broke during the request
    (reset, closed), as opposed to one that could not be made at all."""
    # botocore keeps the HTTP client's error in kwargs (EndpointConnectionError,
    # ConnectionClosedError); the API Gateway path raises aiohttp's own.
    underlying = exc.kwargs.get("error") if isinstance(exc, BotoCoreError) else exc
    if isinstance(underlying, aiohttp.ClientConnectorError):
        return None
    if isinstance(underlying, aiohttp.ClientOSError | aiohttp.ServerDisconnectedError):
        return underlying
    return None


def no_such_key(exc: BaseException) -> bool:
    """The key is not there: HEAD's bare 404, GET's NoSuchKey, some stores' NotFound."""
    return error_code(exc) in ("404", "NoSuchKey", "NotFound")


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or "Unknown"
    if isinstance(exc, EndpointError):
        return exc.code
    if isinstance(exc, CommitConflict):
        return "ConditionalRequestConflict"
    if connection_lost(exc) is not None:
        return "ConnectionLost"
    return type(exc).__name__


# botocore's retries are off (the relay's policy retries, counts and logs every attempt),
# so each of its messages ends "(reached max retries: 0)", which reads as "gave up".
_BOTOCORE_RETRIES = re.compile(r"\s*\(reached max retries: \d+\)")


def describe(exc: BaseException) -> str:
    """What happened, in the words an operator needs (botocore says "Could not connect
    to the endpoint URL" also for a connection that was reset half-way through a part)."""
    if (underlying := connection_lost(exc)) is not None:
        return f"the connection was lost during the request: {underlying}"
    return _BOTOCORE_RETRIES.sub("", str(exc))


def http_status(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if isinstance(exc, EndpointError):
        return exc.status
    return 0


def classify(exc: BaseException) -> PermanentUploadError | None:
    """A PermanentUploadError for a failure that retrying cannot fix, else None."""
    if isinstance(exc, PermanentUploadError):
        return exc
    if not isinstance(exc, ClientError | EndpointError):
        return None  # connection errors, timeouts, anything unexpected: wait it out
    code, status = error_code(exc), http_status(exc)
    if code in TRANSIENT_CODES or status >= 500 or status in (0, 408, 429):
        return None
    if isinstance(exc, EndpointError) and status in (401, 403):
        # The gateway refuses the API key, or a presigned URL's signer lacks a permission.
        return DestinationRefused(
            f"the endpoint refused the relay: {exc.message} ({code}, HTTP {status})",
            code=code,
            fix=exc.fix or "check apigw.api_key and apigw.url",
        )
    if isinstance(exc, EndpointError) and 400 <= status < 500:
        return PermanentUploadError(
            f"the endpoint refused the upload: {exc.message} ({code}, HTTP {status})",
            code=code,
            fix=exc.fix or "check the [apigw] settings in the config",
        )
    if 400 <= status < 500:
        message = str(exc.response.get("Error", {}).get("Message", "")) if isinstance(exc, ClientError) else ""
        if code == "AccessDenied" and "kms" in message.lower():
            # SSE-KMS: S3 needs the key too, for writing and for reading checksums back.
            return DestinationRefused(
                f"S3 refused the upload: the bucket's KMS key is not usable: {message}",
                code="KMS.AccessDenied",
                fix=FIXES["KMS.AccessDenied"],
            )
        fix = FIXES.get(code, "check the S3 destination settings in the config")
        kind = DestinationRefused if code in DESTINATION_CODES else PermanentUploadError
        return kind(f"S3 refused the upload: {code} (HTTP {status})", code=code, fix=fix)
    return None
