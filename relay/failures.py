"""Which upload failures are worth waiting out, and which need an operator.

The rule that keeps clips safe: when in doubt, it is transient. A transient failure
costs a retry; a wrong "permanent" verdict moves a good clip out of the queue.
"""

from __future__ import annotations

from botocore.exceptions import ClientError


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
}


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or "Unknown"
    return type(exc).__name__


def http_status(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def classify(exc: BaseException) -> PermanentUploadError | None:
    """A PermanentUploadError for a failure that retrying cannot fix, else None."""
    if isinstance(exc, PermanentUploadError):
        return exc
    if not isinstance(exc, ClientError):
        return None  # connection errors, timeouts, anything unexpected: wait it out
    code, status = error_code(exc), http_status(exc)
    if code in TRANSIENT_CODES or status >= 500 or status in (0, 408, 429):
        return None
    if 400 <= status < 500:
        fix = FIXES.get(code, "check the S3 destination settings in the config")
        return PermanentUploadError(f"S3 refused the upload: {code} (HTTP {status})", code=code, fix=fix)
    return None
