"""The config of where clips go: S3 directly, or API Gateway (with its presigned
hand-off and an S3 fallback), and the upload settings both share."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator

from relay.config_base import MiB, Strict
from relay.templates import check_key_template

# Keys carry the footage's start and end (UTC, to the microsecond), so one listing of a
# camera's day tells its coverage without a request per object (relay.coverage.keys).
# Both begin with the footage's day; the start comes first, so keys sort by time.
KEY_TEMPLATE = "{camera}/{start:%Y/%m/%d}/{start:%Y%m%dT%H%M%S.%f}_{end:%Y%m%dT%H%M%S.%f}_{filename}"
# Back-fill clips carry no device file name: their key is made of the footage's times.
BACKFILL_KEY_TEMPLATE = "{camera}/{start:%Y/%m/%d}/backfill/{start:%Y%m%dT%H%M%S.%f}_{end:%Y%m%dT%H%M%S.%f}.mkv"
# S3's limit on the parts of one multipart upload.
S3_MAX_PARTS = 10_000


class _Uploads(Strict):
    """How a destination sends clips: shared by the S3 and API Gateway sections."""

    multipart_threshold_bytes: Annotated[int, Field(ge=5 * MiB, le=5 * 1024 * MiB)] = 16 * MiB
    part_size_bytes: Annotated[int, Field(ge=5 * MiB, le=5 * 1024 * MiB)] = 8 * MiB
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    # Total upload rate over all workers, bytes per second; 0 = as fast as the uplink goes.
    max_upload_bytes_per_s: Annotated[int, Field(ge=0)] = 0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    # A request that sends nothing for this long is logged (upload_stalled) at once;
    # read_timeout_s still decides when it is given up.
    stall_warning_s: Annotated[float, Field(gt=0)] = 30.0


class S3Config(_Uploads):
    bucket: Annotated[str, Field(min_length=3, max_length=63)]
    region: str = "us-east-1"
    endpoint_url: str | None = None
    # A CA bundle for an S3-compatible endpoint with a private certificate.
    ca_bundle: FilePath | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    key_template: str = KEY_TEMPLATE
    # Clips fetched back from a camera's SD card; {date} is the footage's start there.
    backfill_key_template: str = BACKFILL_KEY_TEMPLATE
    read_timeout_s: Annotated[float, Field(gt=0)] = 120.0

    @model_validator(mode="after")
    def _directory_bucket_addressing(self) -> S3Config:
        if self.bucket.endswith("--x-s3") and self.addressing_style == "path":
            raise ValueError(
                'addressing_style: directory buckets (S3 Express One Zone, "...--x-s3") take only virtual-hosted '
                'addressing; set addressing_style = "auto" or "virtual"'
            )
        return self

    @field_validator("key_template", "backfill_key_template")
    @classmethod
    def _known_fields(cls, template: str) -> str:
        return check_key_template(template)


# Where the default body limit of the API Gateway path comes from. A synchronous Lambda
# invocation takes at most 6 MiB of request (6,291,456 bytes). The seed's mapping
# template puts the body in that request as base64 (4 characters per 3 bytes) beside
# headers, query parameters and context, for which a few KiB are kept aside.
LAMBDA_REQUEST_LIMIT = 6 * MiB
MAPPED_EVENT_OVERHEAD = 16 * 1024
APIGW_DEFAULT_BODY_BYTES = (LAMBDA_REQUEST_LIMIT - MAPPED_EVENT_OVERHEAD) // 4 * 3  # 4,706,304 bytes
# API Gateway answers 413 to any request body over 10 MiB, whatever the integration.
APIGW_MAX_BODY_BYTES = 10 * MiB


def _http_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(
            "must be an http:// or https:// URL, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com/prod/upload"
        )
    return value


class ApiGatewayConfig(_Uploads):
    """Forward through API Gateway -> Lambda -> S3, as the devices would have."""

    # The invoke URL of the POST method, e.g. https://<api>.execute-api.<region>.amazonaws.com/<stage>/upload
    url: str
    # Sent as x-api-key when the method requires an API key.
    api_key: SecretStr | None = None
    # Clips over this size are not POSTed (API Gateway or the Lambda would refuse them)
    # but go through the presigned hand-off, or to the fallback.
    max_body_bytes: Annotated[int, Field(gt=0, le=APIGW_MAX_BODY_BYTES)] = APIGW_DEFAULT_BODY_BYTES
    # The endpoint that hands out presigned S3 URLs for large clips (cloud/ offers it
    # at <stage>/handoff); unset = the endpoint offers none.
    handoff_url: str | None = None
    # Where a clip too large for the POST goes when no hand-off is offered:
    # "none" = quarantine with a message; "s3" = the [s3] section's bucket, directly.
    fallback: Literal["none", "s3"] = "none"
    # A CA bundle for the API and S3 endpoints with a private certificate.
    ca_bundle: FilePath | None = None
    # Above API Gateway's 29 s integration timeout, so its 504 arrives before ours.
    read_timeout_s: Annotated[float, Field(gt=0)] = 35.0

    @field_validator("url", "handoff_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)
