"""A local stand-in for API Gateway in front of the reference Lambda function.

It enforces what the real REST API does to a request on the way to the function, as
configured by cloud/template.yaml (read from that file, so they cannot drift apart):

- the x-api-key check (403 Forbidden), unknown resources (403 Missing Authentication
  Token), the 10 MiB body cap (413);
- binary media types and the integration's ContentHandling: with CONVERT_TO_TEXT such a
  body reaches the mapping base64-encoded; without it, as raw bytes;
- /upload: the event is the template's own mapping rendered (tests/support/vtl.py), so a
  renamed key reaches the function as it would in AWS; a type with no template is 415
  under PassthroughBehavior NEVER (or WHEN_NO_TEMPLATES) and passed unmapped under
  WHEN_NO_MATCH; the 6 MiB Lambda request limit (500, as the real one answers),
  the integration responses' selection patterns (an error matching none is a 200!);
- /handoff: the Lambda proxy event and response;
- the 29 s integration timeout (504).

The function runs in-process, in a thread, as Lambda would run it: synchronously.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml
from aiohttp import web
from botocore.config import Config as BotoConfig

from relay.dev.local_s3 import ACCESS_KEY, SECRET_KEY, free_port
from tests.support.harness import TLS, raw_config
from tests.support.vtl import KeyedMap, Methods, escape_javascript, render

TEMPLATE = Path(__file__).resolve().parents[2] / "cloud" / "template.yaml"
API_KEY = "relay-key-7f3a"
API_GATEWAY_BODY_LIMIT = 10 * 1024 * 1024
LAMBDA_REQUEST_LIMIT = 6 * 1024 * 1024
INTEGRATION_TIMEOUT_S = 29.0

# A Lambda function; it may return nothing, which API Gateway answers as 200 `null`.
Handler = Callable[[dict[str, Any]], dict[str, Any] | None]


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML; intrinsic functions (!Ref, !Sub...) become None."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def function_s3_client(endpoint_url: str, ca_file: Path) -> Any:
    """The S3 client the function builds for itself in Lambda (boto3, synchronous,
    SigV4, which presigned URLs need), pointed at the local S3 server."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        verify=str(ca_file),
        config=BotoConfig(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )


def template_resources(path: Path = TEMPLATE) -> dict[str, Any]:
    resources: dict[str, Any] = yaml.load(path.read_text(), Loader=_CfnLoader)["Resources"]
    return resources


@dataclass(frozen=True)
class GatewayRules:
    binary_media_types: tuple[str, ...]
    upload_templates: dict[str, str]  # content type -> the /upload mapping template
    error_patterns: tuple[tuple[str, int], ...]  # (selection pattern, status), in order
    content_handling: str | None  # CONVERT_TO_TEXT, CONVERT_TO_BINARY or unset
    passthrough: str  # WHEN_NO_MATCH (AWS's default), WHEN_NO_TEMPLATES or NEVER

    @classmethod
    def from_template(cls, path: Path = TEMPLATE) -> GatewayRules:
        resources = template_resources(path)
        api = resources["Api"]["Properties"]
        integration = resources["UploadMethod"]["Properties"]["Integration"]
        patterns = tuple(
            (r["SelectionPattern"], int(r["StatusCode"]))
            for r in integration["IntegrationResponses"]
            if r.get("SelectionPattern")
        )
        return cls(
            tuple(api["BinaryMediaTypes"]),
            dict(integration["RequestTemplates"]),
            patterns,
            integration.get("ContentHandling"),
            integration.get("PassthroughBehavior", "WHEN_NO_MATCH"),
        )


def _param(params: KeyedMap, name: str) -> str | None:
    """$input.params(name): the path, then the query string, then the headers."""
    for kind in ("path", "querystring", "header"):
        if name in params[kind]:
            return str(params[kind][name])
    return None


def _answer(status: int, message: str, error_type: str | None = None) -> web.Response:
    headers = {"x-amzn-ErrorType": error_type} if error_type else {}
    return web.json_response({"message": message}, status=status, headers=headers)


@dataclass
class ApiGatewayStandIn:
    handler: Handler
    tls_cert: Path
    tls_key: Path
    api_keys: frozenset[str] = frozenset()
    rules: GatewayRules = field(default_factory=GatewayRules.from_template)
    integration_timeout_s: float = INTEGRATION_TIMEOUT_S
    stage: str = "prod"
    handoff_enabled: bool = True
    body_limit: int = API_GATEWAY_BODY_LIMIT
    # What went through: status counts per resource, the largest body seen.
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    largest_body: int = 0
    # Called before each invocation of the function (a test slows or breaks it here).
    before_invoke: Callable[[str], object] | None = None
    port: int = 0

    def url(self, resource: str) -> str:
        return f"https://127.0.0.1:{self.port}/{self.stage}/{resource}"

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ApiGatewayStandIn]:
        app = web.Application(client_max_size=API_GATEWAY_BODY_LIMIT + 1)
        app.router.add_route("*", "/{tail:.*}", self._route)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_cert, self.tls_key)
        self.port = self.port or free_port()
        await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=context).start()
        try:
            yield self
        finally:
            await runner.cleanup()

    async def _route(self, request: web.Request) -> web.StreamResponse:
        resource = request.path.removeprefix(f"/{self.stage}/")
        known = {"upload"} | ({"handoff"} if self.handoff_enabled else set())
        if request.method != "POST" or resource not in known:
            answer = _answer(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
        elif self.api_keys and request.headers.get("x-api-key") not in self.api_keys:
            answer = _answer(403, "Forbidden", "ForbiddenException")
        # By its Content-Length, before reading; a chunked body once read.
        elif (request.content_length or 0) > self.body_limit or len(body := await request.read()) > self.body_limit:
            answer = _answer(413, "Request Too Long")
        else:
            self.largest_body = max(self.largest_body, len(body))
            if resource == "upload":
                answer = await self._upload(request, body)
            else:
                answer = await self._handoff(request, body)
        self.statuses[(resource, answer.status)] += 1
        return answer

    def _is_binary(self, content_type: str) -> bool:
        return any(
            t == "*/*" or t == content_type or (t.endswith("/*") and content_type.startswith(t[:-1]))
            for t in self.rules.binary_media_types
        )

    def _body_for_event(self, content_type: str, body: bytes) -> tuple[str, bool]:
        if self._is_binary(content_type):
            return base64.b64encode(body).decode(), True
        return body.decode("utf-8", errors="replace"), False

    def _mapped_body(self, content_type: str, body: bytes) -> str:
        """$input.body, as the integration's ContentHandling leaves it."""
        binary = self._is_binary(content_type)
        if binary and self.rules.content_handling == "CONVERT_TO_TEXT":
            return base64.b64encode(body).decode()
        if not binary and self.rules.content_handling == "CONVERT_TO_BINARY":
            return base64.b64decode(body, validate=False).decode("latin-1")
        # Passed through: bytes as they came, which no JSON mapping carries intact.
        return body.decode("utf-8", errors="replace")

    def _upload_event(self, request: web.Request, body: bytes, template: str) -> str:
        """The template rendered with what API Gateway offers a mapping."""
        headers = KeyedMap(request.headers.items())
        params = KeyedMap(path=KeyedMap(), querystring=KeyedMap(request.query.items()), header=headers)
        variables = {
            "input": Methods(
                "input",
                {"params": lambda *name: params if not name else _param(params, name[0])},
                {"body": self._mapped_body(request.content_type, body)},
            ),
            "util": Methods("util", {"escapeJavaScript": escape_javascript}, {}),
            "context": KeyedMap(
                httpMethod=request.method,
                stage=self.stage,
                identity=KeyedMap(sourceIp=request.remote or ""),
                requestId=f"req-{id(request):x}",
                resourcePath="/upload",
            ),
        }
        return render(template, variables)

    async def _invoke(self, resource: str, payload: str) -> web.Response | tuple[dict[str, Any] | None, str | None]:
        """The gateway's own answer when the invocation fails, else (result, None) or
        (None, the function's error message)."""
        if len(payload.encode()) > LAMBDA_REQUEST_LIMIT:
            # Lambda refuses the invocation; API Gateway says only this.
            return _answer(500, "Internal server error", "InternalServerErrorException")
        try:
            decoded = json.loads(payload)  # the function gets what was serialised, nothing shared
        except ValueError:
            # A mapping that renders invalid JSON: Lambda refuses the payload.
            return _answer(500, "Internal server error", "InternalServerErrorException")

        def run() -> tuple[dict[str, Any] | None, str | None]:
            try:
                if self.before_invoke:
                    self.before_invoke(resource)
                return self.handler(decoded), None
            except Exception as exc:
                traceback.print_exc()
                return None, str(exc)

        try:
            return await asyncio.wait_for(asyncio.to_thread(run), self.integration_timeout_s)
        except TimeoutError:
            return _answer(504, "Endpoint request timed out", "IntegrationTimeout")

    async def _upload(self, request: web.Request, body: bytes) -> web.Response:
        template = self.rules.upload_templates.get(request.content_type)
        if template is not None:
            payload = self._upload_event(request, body, template)
        elif self.rules.passthrough == "WHEN_NO_MATCH":
            payload = self._mapped_body(request.content_type, body)  # unmapped, as it came
        else:  # NEVER, or WHEN_NO_TEMPLATES with templates defined
            return _answer(415, "Unsupported Media Type", "UnsupportedMediaTypeException")
        outcome = await self._invoke("upload", payload)
        if isinstance(outcome, web.Response):
            return outcome
        result, error = outcome
        if error is None:
            return web.json_response(result)
        for pattern, status in self.rules.error_patterns:
            if re.fullmatch(pattern, error):
                return web.json_response({"message": error}, status=status)
        # No pattern matched: the default (200) response, with the error as its body.
        return web.json_response({"errorMessage": error, "errorType": "Exception"})

    async def _handoff(self, request: web.Request, body: bytes) -> web.Response:
        text, encoded = self._body_for_event(request.content_type, body)
        event = {
            "resource": "/handoff",
            "path": "/handoff",
            "httpMethod": request.method,
            "headers": dict(request.headers),
            "queryStringParameters": dict(request.query) or None,
            "body": text,
            "isBase64Encoded": encoded,
        }
        outcome = await self._invoke("handoff", json.dumps(event))
        if isinstance(outcome, web.Response):
            return outcome
        result, error = outcome
        if error is not None or not isinstance(result, dict) or "statusCode" not in result:
            return _answer(502, "Internal server error")
        return web.Response(
            status=int(result["statusCode"]), text=result.get("body") or "", headers=result.get("headers") or {}
        )


def apigw_raw(
    tmp_path: Path, tls: TLS, gateway: ApiGatewayStandIn, *, s3: dict[str, Any] | None = None, **apigw: Any
) -> dict[str, Any]:
    raw = raw_config(tmp_path, tls, "https://127.0.0.1:1", "unused-bucket")
    if s3 is None:
        del raw["s3"]
    else:
        raw["s3"] = s3
    raw["destination"] = "apigw"
    raw["apigw"] = {
        "url": gateway.url("upload"),
        "handoff_url": gateway.url("handoff"),
        "api_key": API_KEY,
        "ca_bundle": str(tls.ca_file),
        "multipart_threshold_bytes": 5 * 1024 * 1024,
        "part_size_bytes": 5 * 1024 * 1024,
        **apigw,
    }
    return raw
