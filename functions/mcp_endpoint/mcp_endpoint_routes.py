"""The MCP endpoint's request handling: API Gateway event → one MCP HTTP exchange → API Gateway response.

Imported on the first request by app.py (it imports the ``mcp`` SDK), so that importing the handler module
stays cheap. The caller is the JWT authorizer's ``sub``; the workspace is the ``workspaceId`` query
parameter. Everything else — the MCP protocol and the tools — is ``agentdb.tools.mcp_server``.
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from mcp_types import INVALID_PARAMS, INVALID_REQUEST

from agentdb.api.asgi import HttpExchange, HttpReply
from agentdb.container import get_services
from agentdb.tools.mcp_server import Caller, McpEndpoint, json_rpc_error


@cache
def endpoint() -> McpEndpoint:
    return McpEndpoint(lambda: get_services().tools)


def handle(raw: dict[str, Any]) -> dict[str, Any]:
    event = APIGatewayProxyEventV2(raw)
    if event.request_context.http.method.upper() != "POST":
        # GET (a server-initiated SSE stream) and DELETE (end a session): neither exists in stateless mode.
        return {"statusCode": 405, "headers": {"allow": "POST"}, "body": "", "isBase64Encoded": False}
    claims = event.request_context.authorizer.jwt_claim or {}
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:  # the authorizer lets no such request through
        return _response(json_rpc_error(401, INVALID_REQUEST, "Unauthorized: missing identity"))
    workspace_id = (event.query_string_parameters or {}).get("workspaceId", "")
    if not workspace_id:  # its form and the caller's membership are the tool service's to check, per call
        return _response(json_rpc_error(400, INVALID_PARAMS, "the workspaceId query parameter is required"))
    body = event.body or ""
    request = HttpExchange(
        method=event.request_context.http.method,
        path=event.raw_path or "/mcp",
        query_string=event.raw_query_string or "",
        headers=event.headers or {},
        body=base64.b64decode(body) if event.is_base64_encoded else body.encode("utf-8"),
        host=event.request_context.domain_name or "localhost",
        client_ip=event.request_context.http.source_ip or "127.0.0.1",
    )
    return _response(endpoint().handle(request, Caller(sub, workspace_id)))


def _response(reply: HttpReply) -> dict[str, Any]:
    headers = {k: v for k, v in reply.headers.items() if k not in ("content-length", "transfer-encoding")}
    return {"statusCode": reply.status, "headers": headers, "body": reply.text, "isBase64Encoded": False}
