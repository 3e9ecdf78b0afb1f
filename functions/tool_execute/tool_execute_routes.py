"""HTTP route of the tool_execute function (Powertools resolver with request validation).

Imported on the first request by app.py, so that importing the handler module stays cheap.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, Field

from agentdb.api.http import identity, ok, register_error_handlers
from agentdb.api.schemas import Open, envelope, json_response, responses
from agentdb.container import get_services

app = APIGatewayHttpResolver(enable_validation=True)
register_error_handlers(app)


class ToolCallRequest(BaseModel):
    serverId: Annotated[str, Field(min_length=1, max_length=64)]
    toolName: Annotated[str, Field(min_length=1, max_length=64)]
    arguments: dict[str, Any] = Field(default_factory=dict)
    workspaceId: Annotated[str, Field(min_length=1, max_length=128)]


class TextContent(Open):
    type: Literal["text"]
    text: str


class CallToolResult(Open):
    """An MCP CallToolResult: SQL errors are results too (isError: true, structuredContent.error)."""

    content: list[TextContent]
    structuredContent: dict[str, Any]
    isError: bool


_RESPONSES = responses(
    {200: json_response(envelope("CallToolResultEnvelope", CallToolResult), "the tool's CallToolResult")},
    402, 403, 404, 409, 429, 502, 503,
    s403="a read-only member asked for a writing tool",
    s404="unknown tool, or the workspace is not found or you are not a member",
    s409="the database is still provisioning, paused or not provisioned",
)  # fmt: skip


@app.post("/mcp/tools/execute", summary="Call a SQL tool", tags=["tools"], responses=_RESPONSES)
def execute_tool(body: Annotated[ToolCallRequest, Body()]) -> Response[str]:
    caller = identity(app)
    tools = get_services().tools
    return ok(tools.execute(caller.user_id, body.workspaceId, body.serverId, body.toolName, body.arguments))
