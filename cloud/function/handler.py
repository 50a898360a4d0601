"""The reference cloud side of axis-relay: one Lambda function behind API Gateway.

Two entry points, told apart by the shape of the event:

- ``POST <stage>/upload``, the seed's method (non-proxy integration, the seed's mapping
  template): the clip arrives base64-encoded in ``event["body"]``, its name in the
  ``Content-Disposition`` header, the camera as ``subfolder`` (query, path or header).
  It is written to ``<subfolder>/<filename>``, exactly where the seed's function put it.
  A device can still send here directly; a relay adds ``X-Clip-Id`` and
  ``X-Clip-Crc32c`` so that S3 verifies the bytes and a retried request never
  overwrites or duplicates.
- ``POST <stage>/handoff`` (Lambda proxy integration, JSON): presigned S3 URLs for clips
  too large for one request through API Gateway and Lambda. The relay uploads the bytes
  to S3 itself; this function only signs, lists, completes and aborts.

Only boto3 is needed, which the Lambda Python runtime includes. Keys are confined to
``<prefix><segment>/<segment>``, so a caller holding the API key cannot write
anywhere else in the bucket.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import posixpath
import re
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError

# One key segment: what the relay's safe file names and device names consist of,
# plus "~" for the "<stem>~<clip id>" names that keep both of two clashing clips.
# Letters and digits of any script, as the relay keeps them in file names.
SEGMENT = re.compile(r"[^\W_][\w.~+=@,-]{0,199}")
CRC32C = re.compile(r"[A-Za-z0-9+/]{6}==")
CLIP_ID = re.compile(r"[A-Za-z0-9.:_-]{1,64}")
# What the relay and this function must agree on (tests/test_contract.py pins each one;
# the function is deployed alone, so it cannot import them from relay/).
# The time in a clip id: relay/spool/clip.py CLIP_ID_TIME.
CLIP_ID_TIME = "%Y%m%dT%H%M%S.%fZ"
# The object's user metadata: relay/upload/s3.py object_metadata().
METADATA_KEYS = (
    "clip-id",
    "camera",
    "received-at",
    "crc32c",
    "origin",
    "footage-start",
    "footage-end",
    "times-from",
    "sequence",
)
# The footage's fields are optional (a clip whose times are unknown, a name without #s),
# and each is checked: a presigned request carries exactly what was checked.
FOOTAGE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
OPTIONAL_METADATA = {
    "origin": re.compile(r"device|backfill"),
    "footage-start": FOOTAGE_TIME,
    "footage-end": FOOTAGE_TIME,
    "times-from": re.compile(r"(matroska|filename|arrival|export),(matroska|filename|arrival|export)"),
    "sequence": re.compile(r"\d{1,12}"),
}
MAX_PARTS = 10_000


class BadRequest(Exception):
    """The request cannot succeed as sent. On the non-proxy /upload method the
    ``[400]`` prefix is what the integration response maps to HTTP 400; anything else
    the function raises becomes a 500 there (see cloud/template.yaml)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"[400] {message}")
        self.message = message


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _filename(disposition: str | None) -> str | None:
    """The file name in ``attachment; filename="..."`` (quoted or not)."""
    if not disposition:
        return None
    match = re.search(r'filename\s*=\s*"([^"]*)"|filename\s*=\s*([^;\s]+)', disposition)
    if not match:
        return None
    return match.group(1) if match.group(1) is not None else match.group(2)


def _segment(value: object, what: str) -> str:
    # No "/" and no leading dot: one key segment, never "." or "..".
    if not isinstance(value, str) or not SEGMENT.fullmatch(value):
        raise BadRequest(f"{what} {value!r} is not a safe name (letters, digits and ._~+=@,- only)")
    return value


def _field(request: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = request.get(name)
    if not isinstance(value, str) or (pattern and not pattern.fullmatch(value)):
        raise BadRequest(f"field {name!r} is missing or malformed")
    return value


def _number(request: dict[str, Any], name: str, low: int, high: int) -> int:
    value = request.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise BadRequest(f"field {name!r} must be an integer from {low} to {high}")
    return value


def new_clip_id() -> str:
    """An id in the relay's form, for a clip a device sent here directly."""
    return datetime.now(UTC).strftime(CLIP_ID_TIME) + "-" + os.urandom(4).hex()


def disambiguated(key: str, clip_id: str) -> str:
    stem, ext = posixpath.splitext(key)
    return f"{stem}~{clip_id}{ext}"


class ClipBucket:
    """Everything the function does, given an S3 client and a bucket."""

    def __init__(self, client: Any, bucket: str, *, prefix: str = "", url_ttl_s: int = 900) -> None:
        self._s3 = client
        self._bucket = bucket
        self._prefix = prefix
        self._ttl = url_ttl_s

    @classmethod
    def from_environment(cls) -> ClipBucket:
        if tuple(int(n) for n in botocore.__version__.split(".")[:2]) < (1, 36):
            # If-None-Match on PutObject and full-object CRC32C came in botocore 1.36.
            raise RuntimeError(
                f"botocore {botocore.__version__} is too old; package boto3>=1.36 with the "
                "function (pip install --target cloud/function 'boto3>=1.36')"
            )
        client = boto3.client("s3", config=Config(signature_version="s3v4", retries={"mode": "standard"}))
        return cls(
            client,
            os.environ["BUCKET"],
            prefix=os.environ.get("KEY_PREFIX", ""),
            url_ttl_s=int(os.environ.get("URL_TTL_S", "900")),
        )

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        if "params" in event and "context" in event:
            return self.upload(event)  # the seed's mapping template
        if "httpMethod" in event:
            return self.handoff(event)  # Lambda proxy integration
        raise BadRequest("unrecognised event: neither the /upload mapping template nor a proxy request")

    # The seed's POST --------------------------------------------------------------

    def upload(self, event: dict[str, Any]) -> dict[str, Any]:
        headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
        params = event.get("params") or {}
        subfolder = (
            (params.get("querystring") or {}).get("subfolder")
            or (params.get("path") or {}).get("subfolder")
            or headers.get("subfolder")
            or "default_folder"
        )
        filename = _filename(headers.get("content-disposition"))
        if filename is None:
            filename = datetime.now(UTC).strftime("%Y-%m-%d_%H-%M-%S-%f") + ".mkv"
        key = self._prefix + _segment(subfolder, "subfolder") + "/" + _segment(filename, "file name")
        try:
            body = base64.b64decode(event.get("body") or "", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"the body is not the base64 the mapping template makes: {exc}") from None
        if not body:
            raise BadRequest("the body is empty; send the clip as the request body")
        clip_id = headers.get("x-clip-id")
        checksum = headers.get("x-clip-crc32c")
        if clip_id is not None and not CLIP_ID.fullmatch(clip_id):
            raise BadRequest("X-Clip-Id is malformed")
        if checksum is not None and not CRC32C.fullmatch(checksum):
            raise BadRequest("X-Clip-Crc32c must be a base64 CRC32C (8 characters)")
        content_type = headers.get("content-type") or "video/x-matroska"
        metadata = {"camera": str(subfolder)}
        if clip_id:
            metadata["clip-id"] = clip_id
        if checksum:
            metadata["crc32c"] = checksum
        while True:
            args: dict[str, Any] = {"ContentType": content_type, "Metadata": metadata}
            if checksum:
                args["ChecksumCRC32C"] = checksum
            try:
                self._s3.put_object(Bucket=self._bucket, Key=key, Body=body, IfNoneMatch="*", **args)
                return {"key": key, "already_present": False}
            except ClientError as exc:
                code = _error_code(exc)
                if code in ("BadDigest", "InvalidRequest") and checksum:
                    raise BadRequest(
                        "the body does not match X-Clip-Crc32c: it was changed on the way; add its "
                        f"Content-Type ({content_type}) to the API's binary media types"
                    ) from None
                if code not in ("PreconditionFailed", "412"):
                    raise
            held = self._head(key)
            if held and clip_id and held.get("clip_id") == clip_id:
                return {"key": key, "already_present": True}  # a retry whose answer was lost
            if held and held.get("size") == len(body) and checksum and held.get("crc32c") == checksum:
                return {"key": key, "already_present": True}
            if held is None:
                continue  # removed in between: try the key again
            if not clip_id:
                # A device (no clip id): never overwrite, keep both under an id of its own.
                clip_id = new_clip_id()
            key = disambiguated(key, clip_id)

    # The presigned hand-off -------------------------------------------------------

    def handoff(self, event: dict[str, Any]) -> dict[str, Any]:
        try:
            if event.get("httpMethod") != "POST":
                return _json(405, {"message": "POST a JSON request"})
            raw = event.get("body") or ""
            if event.get("isBase64Encoded"):
                raw = base64.b64decode(raw).decode()
            try:
                request = json.loads(raw)
            except ValueError:
                raise BadRequest("the body is not JSON") from None
            if not isinstance(request, dict):
                raise BadRequest("the body is not a JSON object")
            action = request.get("action")
            operation = {
                "put": self._presign_put,
                "create": self._create,
                "part": self._presign_part,
                "parts": self._parts,
                "uploads": self._uploads,
                "complete": self._complete,
                "abort": self._abort,
                "head": self._head_request,
            }.get(str(action))
            if operation is None:
                raise BadRequest(f"unknown action {action!r}")
            return _json(200, operation(request))
        except BadRequest as exc:
            return _json(400, {"message": exc.message})

    def _key(self, request: dict[str, Any]) -> str:
        key = _field(request, "key")
        if not key.startswith(self._prefix):
            raise BadRequest(f"key must start with {self._prefix!r}")
        folder, _, name = key[len(self._prefix) :].partition("/")
        _segment(folder, "key folder")
        _segment(name, "key name")
        return key

    def _object_fields(self, request: dict[str, Any]) -> tuple[str, dict[str, str]]:
        content_type = _field(request, "content_type")
        metadata = {
            "clip-id": _field(request, "clip_id", CLIP_ID),
            "camera": _segment(request.get("camera"), "camera"),
            "received-at": _field(request, "received_at"),
            "crc32c": _field(request, "crc32c", CRC32C),
        }
        if not content_type.isascii() or not metadata["received-at"].isascii():
            raise BadRequest("content_type and received_at must be ASCII")
        for name, pattern in OPTIONAL_METADATA.items():
            if request.get(name.replace("-", "_")) is not None:
                metadata[name] = _field(request, name.replace("-", "_"), pattern)
        return content_type, metadata

    def _presign_put(self, request: dict[str, Any]) -> dict[str, Any]:
        key = self._key(request)
        content_type, metadata = self._object_fields(request)
        params = {
            "Bucket": self._bucket,
            "Key": key,
            "ContentType": content_type,
            "Metadata": metadata,
            "ChecksumCRC32C": metadata["crc32c"],
            "IfNoneMatch": "*",
        }
        url = self._s3.generate_presigned_url("put_object", Params=params, ExpiresIn=self._ttl)
        # Every header below is signed into the URL: the uploader must send them as is.
        headers = {
            "Content-Type": content_type,
            "If-None-Match": "*",
            "x-amz-checksum-crc32c": metadata["crc32c"],
            **{f"x-amz-meta-{k}": v for k, v in metadata.items()},
        }
        return {"url": url, "headers": headers}

    def _create(self, request: dict[str, Any]) -> dict[str, Any]:
        key = self._key(request)
        content_type, metadata = self._object_fields(request)
        created = self._s3.create_multipart_upload(
            Bucket=self._bucket,
            Key=key,
            ContentType=content_type,
            Metadata=metadata,
            ChecksumAlgorithm="CRC32C",
            ChecksumType="FULL_OBJECT",
        )
        return {"upload_id": created["UploadId"]}

    def _presign_part(self, request: dict[str, Any]) -> dict[str, Any]:
        key = self._key(request)
        checksum = _field(request, "crc32c", CRC32C)
        params = {
            "Bucket": self._bucket,
            "Key": key,
            "UploadId": _field(request, "upload_id"),
            "PartNumber": _number(request, "number", 1, MAX_PARTS),
            "ChecksumCRC32C": checksum,
        }
        url = self._s3.generate_presigned_url("upload_part", Params=params, ExpiresIn=self._ttl)
        return {"url": url, "headers": {"x-amz-checksum-crc32c": checksum}}

    def _parts(self, request: dict[str, Any]) -> dict[str, Any]:
        key, upload_id = self._key(request), _field(request, "upload_id")
        held: dict[str, str] = {}
        marker = 0
        try:
            while True:
                page = self._s3.list_parts(Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker)
                held.update({str(p["PartNumber"]): p["ETag"] for p in page.get("Parts", [])})
                if not page.get("IsTruncated"):
                    return {"parts": held}
                marker = int(page["NextPartNumberMarker"])
        except ClientError as exc:
            if _error_code(exc) == "NoSuchUpload":
                return {"parts": None}
            raise

    def _uploads(self, request: dict[str, Any]) -> dict[str, Any]:
        """The multipart uploads in progress for exactly this key (a relay that crashed
        between create and its record finds its upload here, and aborts strays)."""
        key = self._key(request)
        found: list[dict[str, str]] = []
        markers: dict[str, str] = {}
        while True:
            page = self._s3.list_multipart_uploads(Bucket=self._bucket, Prefix=key, **markers)
            found += [
                {"upload_id": u["UploadId"], "initiated": u["Initiated"].isoformat()}
                for u in page.get("Uploads", [])
                if u.get("Key") == key
            ]
            if not page.get("IsTruncated"):
                return {"uploads": found}
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def _complete(self, request: dict[str, Any]) -> dict[str, Any]:
        key, upload_id = self._key(request), _field(request, "upload_id")
        parts = request.get("parts")
        if not isinstance(parts, list) or not parts or len(parts) > MAX_PARTS:
            raise BadRequest("parts must be a list of {number, etag, crc32c}")
        listing = []
        for part in parts:
            if not isinstance(part, dict):
                raise BadRequest("parts must be a list of {number, etag, crc32c}")
            listing.append(
                {
                    "PartNumber": _number(part, "number", 1, MAX_PARTS),
                    "ETag": _field(part, "etag"),
                    "ChecksumCRC32C": _field(part, "crc32c", CRC32C),
                }
            )
        try:
            self._s3.complete_multipart_upload(
                Bucket=self._bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listing},
                ChecksumCRC32C=_field(request, "crc32c", CRC32C),
                ChecksumType="FULL_OBJECT",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            code = _error_code(exc)
            if code in ("PreconditionFailed", "412"):
                return {"outcome": "taken"}
            if code == "ConditionalRequestConflict":
                return {"outcome": "conflict"}  # 409: the relay uploads every part again
            if code == "NoSuchUpload":
                return {"outcome": "gone"}
            if code in ("InvalidPart", "InvalidPartOrder", "BadDigest", "InvalidRequest", "EntityTooSmall"):
                raise BadRequest(f"S3 refused to complete the upload: {code}") from None
            raise
        return {"outcome": "done"}

    def _abort(self, request: dict[str, Any]) -> dict[str, Any]:
        key, upload_id = self._key(request), _field(request, "upload_id")
        try:
            self._s3.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise
        return {}

    def _head_request(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"object": self._head(self._key(request))}

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return {
            "clip_id": head.get("Metadata", {}).get("clip-id"),
            "size": head.get("ContentLength"),
            "crc32c": head.get("ChecksumCRC32C") or head.get("Metadata", {}).get("crc32c"),
        }


def _json(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


_bucket: ClipBucket | None = None


def lambda_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    # Built once per execution environment and reused by the invocations it serves.
    global _bucket
    if _bucket is None:
        _bucket = ClipBucket.from_environment()
    return _bucket.handle(event)
