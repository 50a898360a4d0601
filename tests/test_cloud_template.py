"""cloud/template.yaml validates, and grants the function exactly what it uses."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.apigw_standin import TEMPLATE, GatewayRules, template_resources
from tests.support.vtl import KeyedMap, Methods, TemplateError, escape_javascript, render

HANDLER = TEMPLATE.parent / "function" / "handler.py"

# The IAM action behind each S3 call the function makes (presigned URLs act with the
# function's role, so the calls they sign count too).
ACTION_FOR_CALL = {
    "put_object": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "head_object": "s3:GetObject",
    "list_parts": "s3:ListMultipartUploadParts",
    "list_multipart_uploads": "s3:ListBucketMultipartUploads",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
}


def test_template_passes_cfn_lint() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def s3_calls_in_handler() -> set[str]:
    """Methods called on the function's S3 client (self._s3.<call>), and presigned ones."""
    calls = set()
    for node in ast.walk(ast.parse(HANDLER.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if isinstance(target, ast.Attribute) and target.attr == "_s3":
                if node.func.attr == "generate_presigned_url":
                    assert isinstance(node.args[0], ast.Constant)
                    calls.add(str(node.args[0].value))
                else:
                    calls.add(node.func.attr)
    return calls


def test_function_role_allows_exactly_the_calls_it_makes() -> None:
    resources = template_resources()
    [policy] = resources["ClipFunctionRole"]["Properties"]["Policies"]
    granted = {
        a
        for s in policy["PolicyDocument"]["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    calls = s3_calls_in_handler()
    assert calls <= ACTION_FOR_CALL.keys(), f"map the new call(s) to an IAM action: {calls - ACTION_FOR_CALL.keys()}"
    needed = {ACTION_FOR_CALL[c] for c in calls}
    # ListBucket only so that HeadObject on a missing key answers 404 rather than 403.
    assert granted == needed | {"s3:ListBucket"}
    assert not any(a.endswith("*") or "Delete" in a for a in granted)


def test_bucket_aborts_incomplete_multipart_uploads_and_the_api_takes_video_as_binary() -> None:
    resources = template_resources()
    [rule] = resources["ClipBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert "AbortIncompleteMultipartUpload" in rule
    rules = GatewayRules.from_template()
    assert "video/x-matroska" in rules.binary_media_types
    assert set(rules.upload_templates) <= set(rules.binary_media_types)
    # A binary body reaches the mapping base64-encoded (the function decodes it), and a
    # type without a template is refused (415), never handed to the function unmapped.
    assert (rules.content_handling, rules.passthrough) == ("CONVERT_TO_TEXT", "NEVER")
    # Every function error maps to a 4xx/5xx, so none is answered 200.
    assert any(pattern == r"(\n|.)+" for pattern, status in rules.error_patterns if status >= 500)


def test_the_upload_mapping_renders_the_event_the_function_reads() -> None:
    """The template's own VTL, rendered as API Gateway would: body, headers, params."""
    rules = GatewayRules.from_template()
    headers = KeyedMap({"Content-Disposition": 'attachment; filename="a.mkv"', "X-Quote": 'say "hi"\\'})
    params = KeyedMap(path=KeyedMap(), querystring=KeyedMap(subfolder="cam-1"), header=headers)
    variables = {
        "input": Methods("input", {"params": lambda: params}, {"body": "AAEC"}),
        "util": Methods("util", {"escapeJavaScript": escape_javascript}, {}),
        "context": KeyedMap(
            httpMethod="POST",
            stage="prod",
            identity=KeyedMap(sourceIp="10.0.0.9"),
            requestId="r",
            resourcePath="/upload",
        ),
    }
    event = json.loads(render(rules.upload_templates["video/x-matroska"], variables))
    assert event["body"] == "AAEC"
    assert event["headers"] == dict(headers)
    assert event["params"] == {"path": {}, "querystring": {"subfolder": "cam-1"}, "header": dict(headers)}
    assert event["context"]["http-method"] == "POST"
    assert event["context"]["source-ip"] == "10.0.0.9"


def test_the_vtl_subset_refuses_what_it_does_not_model() -> None:
    with pytest.raises(TemplateError, match=r"\$input.json\(\) is not modelled"):
        render("$input.json('$')", {"input": Methods("input", {}, {})})
    with pytest.raises(TemplateError, match="#end expected"):
        render("#if($x) open", {"x": True})
    # Velocity renders an undefined reference as its own text; #else and nesting work.
    assert (
        render("$nope #if($a)#foreach($i in $l)$i#if($foreach.hasNext),#end#end#else no#end", {"a": True, "l": [1, 2]})
        == "$nope 1,2"
    )
    # Commons Lang escapes the single quote: not valid JSON, as AWS documents.
    assert escape_javascript('it\'s / "x"') == 'it\\\'s \\/ \\"x\\"'
