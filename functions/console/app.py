"""The database console: the static page (HTML, CSS, ES modules) at GET /console and GET /console/{proxy+}.

Public routes (no authorizer): the page holds no secret and no user data; every API call it makes
carries the user's own bearer token. The files are read once per container from ``static/`` beside
this module and answered from memory (see agentdb.api.static_site for the headers and the path rules).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from agentdb.api.static_site import StaticSite, api_origin_from_env
from agentdb.observability import lambda_handler

STATIC_DIR = Path(__file__).resolve().parent / "static"


@cache
def site() -> StaticSite:
    return StaticSite(STATIC_DIR, api_origin=api_origin_from_env())


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    headers = event.get("headers") or {}
    asset = (event.get("pathParameters") or {}).get("proxy")
    raw_path = str(event.get("rawPath") or "")
    return site().respond(asset, trailing_slash=raw_path.endswith("/"), if_none_match=headers.get("if-none-match"))
