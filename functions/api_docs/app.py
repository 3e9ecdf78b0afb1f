"""GET /openapi.json: the API's OpenAPI document (public, like the console: it holds no secret).

The document beside this module is generated from the handlers' own models by ``make openapi``
(local/openapi.py); tests/unit/test_openapi.py fails when it no longer matches the code.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.observability import lambda_handler

DOCUMENT = Path(__file__).resolve().parent / "openapi.json"


@cache
def _document() -> tuple[str, str]:
    text = DOCUMENT.read_text(encoding="utf-8")
    return text, '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    text, etag = _document()
    headers = {
        "Content-Type": "application/json",
        "Cache-Control": "no-cache",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Access-Control-Allow-Origin": "*",  # a public document: any API tool may fetch it
    }
    if (event.get("headers") or {}).get("if-none-match") == etag:
        return {"statusCode": 304, "headers": headers, "body": ""}
    return {"statusCode": 200, "headers": headers, "body": text}
