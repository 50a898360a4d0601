"""The seed's Lambda function (scoville/axis-to-aws-protocol-comparison,
HTTPS/API_gateway_to_lambda_to_S3/lambda_handler.js), as it behaves, in Python.

What it reads, and nothing more: ``subfolder`` from the event's ``headers``,
``queryStringParameters``, ``query`` and ``pathParameters`` (query over header), the
file name from the header spelled exactly ``Content-Disposition``, the base64 body. It
writes ``<subfolder>/<file>`` unconditionally (``default_folder`` when it found no
subfolder). Behind the seed's "method request passthrough" mapping template, which the
stand-in applies, query parameters arrive under ``params.querystring``, where it does
not look. As published, its exported handler only logs the event and returns nothing
(API Gateway answers 200 ``null``); ``exported_upload=True`` is the handler fixed.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any


class SeedFunction:
    def __init__(self, s3: Any, bucket: str, *, exported_upload: bool) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._exported_upload = exported_upload
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> dict[str, Any] | None:
        self.events.append(event)
        if not self._exported_upload:
            return None  # exports.handler = async (event) => { console.log(event); }
        return self._upload(event)

    def _upload(self, event: dict[str, Any]) -> dict[str, Any]:
        headers = event.get("headers") or {}
        found = {
            **headers,
            **(event.get("queryStringParameters") or {}),
            **(event.get("query") or {}),
            **(event.get("pathParameters") or {}),
        }
        subfolder = found.get("subfolder") or "default_folder"
        filename = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")[:-4] + ".mkv"
        if headers.get("Content-Disposition"):
            filename = headers["Content-Disposition"].replace("attachment; filename=", "").replace('"', "")
        data = base64.b64decode(event["body"])
        key = f"{subfolder}/{filename}"
        if data:
            self._s3.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType="video/x-matroska")
        return {"statusCode": 200, "body": json.dumps(f"Upload successful:{self._bucket}/{key}")}
